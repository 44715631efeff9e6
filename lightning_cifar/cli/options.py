"""``lightning-cifar options``: this project's own options of fit / validate / test / predict, short.

``lightning-cifar fit --help`` lists about 900 lines, almost all of them the Trainer's; the options a user of
this project sets most (the model, the data, our callbacks) are buried there. This lists them from the same
signatures and docstrings jsonargparse reads, with their defaults.
"""

from __future__ import annotations

import argparse
import inspect
import re
from typing import Any, Sequence

import docstring_parser

from lightning_cifar.cli.lightning_cli import CALLBACK_GROUPS, CHECKPOINT_DEFAULTS
from lightning_cifar.cli.program import PROG
from lightning_cifar.data.datamodule import CIFAR10DataModule
from lightning_cifar.training.classifier import Classifier

# The options of the command itself (LightningCLI's and ours), with what they do.
COMMAND_OPTIONS = (
    ("-c, --config FILE", "a YAML file of options (`--print_config` writes one with every option and its value)"),
    ("--print_config", "print the whole configuration these options give, and stop"),
    ("--ckpt_path PATH", "a .ckpt file, `last`, `best`, or a run folder (its best checkpoint); fit resumes from it"),
    ("--seed_everything INT", "the seed (default 0); `false` for none, and a thread count that follows the load"),
    ("--output DIR", "validate / test / predict: where to write (default: next to the checkpoint's run)"),
    ("--check_memory BOOL", "refuse a network that cannot fit in memory before building it (default true)"),
)
SECTIONS = (("model", Classifier, "the LightningModule: network, optimizer, schedule, evaluation"),
            ("data", CIFAR10DataModule, "CIFAR-10: where, batches, split, augmentation"))
WIDTH = 34
TEXT = 90  # characters of a description: its first sentence, cut short


def _shown(value: Any) -> str:
    if value is inspect.Parameter.empty:
        return "required"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


def _signature_class(cls: type) -> type:
    """The class whose ``__init__`` says what ``cls`` takes: ``cls``, or the first parent a ``*args, **kwargs``
    subclass hands everything on to (``LatestCheckpoint`` -> ``ModelCheckpoint``)."""
    for klass in cls.__mro__:
        kinds = {p.kind for p in inspect.signature(klass.__init__).parameters.values()}
        if not {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD} <= kinds:
            return klass
    return cls


def _described(klass: type) -> dict[str, str]:
    """Each parameter's text from the Args section of the class's or its ``__init__``'s docstring."""
    found: dict[str, str] = {}
    for doc in (inspect.getdoc(klass.__init__), inspect.getdoc(klass)):
        # A leading line, so that a docstring that starts with its Args section parses as one.
        for param in docstring_parser.parse(".\n\n" + (doc or "")).params:
            found.setdefault(param.arg_name, " ".join((param.description or "").split()))
    return found


def _lines(group: str, cls: type, defaults: dict[str, Any]) -> list[str]:
    klass = _signature_class(cls)
    described = _described(klass)
    lines = []
    for name, parameter in inspect.signature(klass.__init__).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = defaults.get(f"{group}.{name}", parameter.default)
        option = f"  --{group}.{name}={_shown(default)}"
        first = re.split(r"(?<!e\.g)(?<!i\.e)\. ", described.get(name, ""))[0].rstrip(".")
        first = first if len(first) <= TEXT else first[:TEXT - 4].rsplit(" ", 1)[0] + " ..."
        if len(option) >= WIDTH:
            lines.append(option)
            option = ""
        lines.append(f"{option:<{WIDTH}}{first}".rstrip())
    return lines


def options_text() -> str:
    out = [f"{PROG} fit / validate / test / predict: the project's own options, with their defaults.",
           f"The Trainer's options (--trainer.*) are in `{PROG} fit --help`; `--print_config` shows every value.", ""]
    out += [f"  {name:<{WIDTH - 2}}{what}" for name, what in COMMAND_OPTIONS]
    for group, cls, what in SECTIONS:
        out += ["", f"{group}: {what} ({cls.__name__})", *_lines(group, cls, {})]
    for group, cls in CALLBACK_GROUPS.items():
        first = (inspect.getdoc(cls) or "").splitlines()[0].rstrip(".")
        out += ["", f"{group}: {first} ({cls.__name__})", *_lines(group, cls, CHECKPOINT_DEFAULTS)]
    return "\n".join(out)


def options_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"{PROG} options",
                                     description="List this project's own options of fit / validate / test / predict.")
    parser.parse_args(list(argv))
    print(options_text())
    return 0
