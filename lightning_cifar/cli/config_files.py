"""The command line's config files (``-c`` / ``--config``), read once, by jsonargparse.

jsonargparse reads each file and hands its text to the loader of the parser's mode; ours
(:func:`load_config_text`, registered with jsonargparse's public ``set_loader``) is YAML as
jsonargparse loads it, plus what a user needs when a file is wrong: one line naming the file,
the line and the column of broken YAML, a file that is empty or not a mapping, an option that has
moved. It also keeps each file's settings for the command (:class:`ConfigFiles`), so that a
``--ckpt_path`` run knows which model settings the user gave without reading the files again.
What can be said without reading a file (missing, a folder) is said before parsing starts.
"""

from __future__ import annotations

import contextlib
import os
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import yaml
from jsonargparse import get_loader, set_loader

from lightning_cifar.errors import LightningCifarError
from lightning_cifar.files import check_expanded

# The parser mode of our LightningCLI: jsonargparse's YAML, through load_config_text.
PARSER_MODE = "lightning_cifar_yaml"
EXAMPLE = "e.g. 'trainer: {max_epochs: 5}' (lightning-cifar fit --print_config shows all)"

# Options that moved, with where they live now.
MOVED_OPTIONS = {
    "data.normalize": "model.normalize (since 0.2 the model standardises its own [0, 1] input, so that a"
                      " loaded checkpoint or an exported model needs no data settings)",
}


@dataclass
class ConfigFiles:
    """The config files of one command: the paths as given, and what each held once parsed."""

    given: list[str] = field(default_factory=list)
    loaded: list[dict[str, Any]] = field(default_factory=list)

    def label(self, name: str) -> str:
        """The path as the user gave it, for the file name jsonargparse passes to the loader."""
        matches = [p for p in self.given if os.path.basename(p) == name]
        return matches[0] if len(matches) == 1 else name

    def model_keys(self, subcommand: str) -> set[str]:
        """The model settings the files set, for ``subcommand`` (a file may be sectioned by subcommand)."""
        keys: set[str] = set()
        for config in self.loaded:
            section = config.get(subcommand, config)
            model = section.get("model") if isinstance(section, dict) else None
            keys.update(model if isinstance(model, dict) else ())
        return keys


_reading: ContextVar[Optional[ConfigFiles]] = ContextVar("lightning_cifar_config_files", default=None)


def _moved(key: str, where: str) -> None:
    if key in MOVED_OPTIONS:
        raise LightningCifarError(f"{where}: {key} has moved to {MOVED_OPTIONS[key]}")


def _dotted_keys(config: Any, prefix: str = "") -> list[str]:
    if not isinstance(config, dict):
        return []
    keys = []
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        keys += [dotted, *_dotted_keys(value, f"{dotted}.")]
    return keys


def config_paths(argv: Sequence[str]) -> list[str]:
    """The files named by ``-c PATH``, ``--config PATH`` and ``--config=PATH`` (not inline YAML)."""
    paths = []
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            continue
        if not (path.lstrip().startswith(("{", "-")) or "\n" in path):  # inline YAML/JSON, or a missing value
            paths.append(path)
    return paths


def check_cli_config_files(argv: Sequence[str]) -> None:
    """Before parsing: options that have moved, on the command line; config files that are missing or folders
    (jsonargparse would take the path for inline YAML). The files' contents are checked as they are read."""
    for arg in argv:
        if arg.startswith("--"):
            _moved(arg[2:].split("=", 1)[0], arg)
    for path in config_paths(argv):
        if Path(path).is_dir():
            raise LightningCifarError(f"config {path} is a folder; pass a YAML file")
        if not Path(path).is_file():
            raise LightningCifarError(f"config {path} does not exist")


def load_config_text(text: str, path: str = "") -> Any:
    """jsonargparse's YAML loader; for a config file (``path``), with our checks and a one-line error."""
    load = get_loader("yaml")
    files = _reading.get()
    if not path:
        value = load(text)  # a value given on the command line
        check_expanded(value, f"the value {text[:40]!r}")
        return value
    label = files.label(path) if files is not None else path
    try:
        config = load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LightningCifarError(f"{label}:{where}: malformed YAML: {problem}") from exc
    if config is None or (isinstance(config, str) and not config.strip()):
        raise LightningCifarError(f"config {label} is empty; a config file maps options to values, {EXAMPLE}")
    if not isinstance(config, dict):
        raise LightningCifarError(f"config {label} holds a {type(config).__name__}, not a mapping of options to"
                                  f" values, {EXAMPLE}")
    check_expanded(config, f"config {label}")  # before our key walk and jsonargparse's
    for key in _dotted_keys(config):
        _moved(key, label)
    if files is not None:
        files.loaded.append(config)
    return config


@contextlib.contextmanager
def reading_config_files(argv: Sequence[str]) -> Iterator[ConfigFiles]:
    """While a command parses ``argv``: its config files go through :func:`load_config_text`, and what
    they held is collected in the returned record."""
    set_loader(PARSER_MODE, load_config_text, (yaml.YAMLError,))  # a named mode: no other parser is touched
    files = ConfigFiles(config_paths(argv))
    token = _reading.set(files)
    try:
        yield files
    finally:
        _reading.reset(token)
