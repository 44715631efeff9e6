"""Checks of the command line's config files before jsonargparse reads them: one line naming the file's
line for broken YAML, and options that have moved."""

from __future__ import annotations

from typing import Any, Sequence

from lightning_cifar.errors import LightningCifarError
from lightning_cifar.files import read_yaml


# Options that moved, with where they live now.
MOVED_OPTIONS = {
    "data.normalize": "model.normalize (since 0.2 the model standardises its own [0, 1] input, so that a"
                      " loaded checkpoint or an exported model needs no data settings)",
}


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


def check_cli_config_files(argv: Sequence[str]) -> None:
    """Read every ``-c`` / ``--config`` file up front, so a broken one is one line naming its line;
    name options that have moved, on the command line or in a config file."""
    for arg in argv:
        if arg.startswith("--"):
            _moved(arg[2:].split("=", 1)[0], arg)
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            continue
        if path.lstrip().startswith(("{", "-")) or "\n" in path:
            continue  # inline YAML/JSON, or a missing value: jsonargparse reports those itself
        config = read_yaml(path)
        if config is None:
            raise LightningCifarError(f"config {path} is empty; a config file maps options to values,"
                                      " e.g. 'trainer: {max_epochs: 5}' (lightning-cifar fit --print_config shows all)")
        if not isinstance(config, dict):
            raise LightningCifarError(f"config {path} holds a {type(config).__name__}, not a mapping of options to"
                                      " values, e.g. 'trainer: {max_epochs: 5}' (lightning-cifar fit --print_config"
                                      " shows all)")
        for key in _dotted_keys(config):
            _moved(key, path)
