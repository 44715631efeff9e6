"""Reading YAML config files with errors that name the file, the line and the column."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml

from lightning_cifar.errors import LightningCifarError


def read_yaml(path: str | Path, what: str = "config", error: type[LightningCifarError] = LightningCifarError) -> Any:
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}:{where}: malformed YAML: {problem}") from exc


def check_cli_config_files(argv: Sequence[str]) -> None:
    """Read every ``-c`` / ``--config`` file up front, so a broken one is one line naming its line."""
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            continue
        if path.lstrip().startswith(("{", "-")) or "\n" in path:
            continue  # inline YAML/JSON, or a missing value: jsonargparse reports those itself
        read_yaml(path)
