"""Model settings when a command starts from a checkpoint: which the user gave, which the checkpoint sets.

LightningCLI replaces every model setting with the checkpoint's, silently; a value given on the command
line would be lost without a word. Here a given value that differs is refused, except the runtime
settings, which describe how to run the network rather than what it is; the settings the checkpoint
changed are listed in one info line.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable

from jsonargparse import Namespace
from pytorch_lightning.utilities import rank_zero_info

from lightning_cifar.errors import LightningCifarError

# Model settings that change how a network runs, not what it is or how it trains: given on the command
# line, they win over a checkpoint's. Every other model setting comes from the checkpoint.
RUNTIME_MODEL_KEYS = ("tta", "channels_last", "compile")


def explicit_model_keys(args: Any, config_file_keys: Iterable[str] = ()) -> set[str]:
    """The ``model`` settings the user gave, as opposed to defaults: on the command line (``args``, or
    ``sys.argv`` when None), in a config mapping (the study's), or in config files (``config_file_keys``, as
    the files were read by the parser)."""
    words = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
    keys = {word[len("--model."):].split("=", 1)[0].split(".", 1)[0] for word in words if word.startswith("--model.")}
    keys.update(config_file_keys)
    if isinstance(args, dict):
        keys.update((args.get("model") or {}).keys())
    return keys


def plain(value: Any) -> Any:
    return value.as_dict() if isinstance(value, Namespace) else value


def reconcile_model_settings(given: Any, stored: dict[str, Any], explicit: set[str], label: str) -> dict[str, Any]:
    """A run from a checkpoint takes the checkpoint's model settings. One the user gave that differs is
    refused (it would be silently replaced), except the runtime ones, which are honoured; the settings
    the checkpoint changed are listed. Returns the runtime settings to put back over the checkpoint's."""
    differs = {k: v for k, v in stored.items() if k in given and plain(given[k]) != plain(v)}
    conflicts = sorted(k for k in differs if k in explicit and k not in RUNTIME_MODEL_KEYS)
    if conflicts:
        k = conflicts[0]
        raise LightningCifarError(
            f"{label}: --model.{k}={plain(given[k])} differs from the checkpoint's {k}={plain(stored[k])}; a run"
            f" from a checkpoint keeps the checkpoint's model settings (only {', '.join(RUNTIME_MODEL_KEYS)} may"
            " change): drop the option, or start a new fit")
    taken = {k: v for k, v in differs.items() if k not in explicit}
    if taken:
        rank_zero_info(f"{label}: model settings from the checkpoint: "
                       + ", ".join(f"{k}={plain(v)}" for k, v in sorted(taken.items())))
    return {k: plain(given[k]) for k in explicit & set(RUNTIME_MODEL_KEYS) if k in given}
