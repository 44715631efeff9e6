"""Our files: result files written atomically (readers see the old file or the whole new one, never half),
and YAML files read with errors that name the file, the line and the column.

Write to a temporary name in the same folder, then rename over the target, so a
crash or a kill while writing can never leave a truncated file behind.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from lightning_cifar.errors import DiskFullError, LightningCifarError

# The errors that mean "no room for these bytes": a full disk, a user's quota, the process's file-size limit
# (``ulimit -f``).
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def no_room(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_ROOM


def _free_space(path: Path) -> str:
    for folder in (path, *path.parents):
        try:
            return f", {shutil.disk_usage(folder).free / 2**20:.1f} MiB free there"
        except OSError:
            continue
    return ""


def no_room_error(exc: OSError, path: Optional[Path]) -> DiskFullError:
    """``exc`` (one of :data:`NO_ROOM`) as one line naming the file that could not be written, where known."""
    if exc.errno == errno.EFBIG:
        why = ": the process's file-size limit, ulimit -f"
    else:
        why = _free_space(Path(path).parent) if path is not None else ""
    if path is None:
        what, kept = "a file of this command (TensorBoard's events or Lightning's)", "what was written before is intact"
    else:
        what, kept = path, "it was not written, and an older file of that name is intact"
    return DiskFullError(f"{what}: no room to write it ({exc.strerror or exc}{why}); {kept}: free some space, or write"
                         " elsewhere, and run the command again")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if no_room(exc):
            raise no_room_error(exc, path) from exc
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# A spreadsheet runs a cell that starts with one of these as a formula ("=HYPERLINK(...)").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def printable(text: str) -> str:
    """``text`` with bytes that were not valid UTF-8 (file names, read with surrogate escapes) as ``\\xff``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def spreadsheet_safe(cell: Any) -> Any:
    """Text cells that a spreadsheet would read as a formula get a leading apostrophe, as OWASP advises
    for CSV files; numbers (also negative ones written as text) stay as they are."""
    if not isinstance(cell, str):
        return cell
    cell = printable(cell)
    if cell.startswith(FORMULA_STARTS):
        try:
            float(cell)
        except ValueError:
            return "'" + cell
    return cell


def atomic_write_csv(path: Path, rows: Sequence[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([[spreadsheet_safe(cell) for cell in row] for row in rows])
    atomic_write_text(path, buffer.getvalue())


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


# What a file we read may hold once its shared parts are spelled out (YAML aliases, a pickle's shared references):
# our configs, studies and checkpoints' hyperparameters hold a few hundred values and nest a few levels. A ~1 KB
# file of nested YAML anchors or pickled shared lists expands to billions (2^60 paths), which every walk over it
# (ours, jsonargparse's, Lightning's) would follow.
MAX_EXPANDED_VALUES = 100_000
MAX_NESTING = 64


def check_expanded(value: Any, label: str, error: type[LightningCifarError] = LightningCifarError) -> None:
    """Refuse, in one line, a value that contains itself, nests deeper than :data:`MAX_NESTING` or spells out to
    more than :data:`MAX_EXPANDED_VALUES` values; without recursion, and without expanding more than the limit."""
    count = 0
    stack: list[tuple[Any, int, frozenset[int]]] = [(value, 0, frozenset())]
    while stack:
        item, depth, above = stack.pop()
        count += 1
        if count > MAX_EXPANDED_VALUES:
            raise error(f"{label}: holds more than {MAX_EXPANDED_VALUES:,} values once its repeated parts (YAML"
                        " aliases, shared references) are spelled out; refused before anything walks it")
        if isinstance(item, dict):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple, set)):
            children = list(item)
        else:
            continue
        if id(item) in above:
            raise error(f"{label}: contains itself (a list or mapping that refers back to itself); refused")
        if depth >= MAX_NESTING:
            raise error(f"{label}: nests more than {MAX_NESTING} levels deep; refused")
        inner = above | {id(item)}
        stack.extend((child, depth + 1, inner) for child in children)


def ensure_writable(folder: Path, need_bytes: int, option: str) -> None:
    """Fail now, in one line naming ``option`` (how to choose another folder), not after the work, if ``folder``
    cannot be made and written to or its disk has less than ``need_bytes`` free."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise LightningCifarError(f"cannot write to {folder} ({exc.strerror or exc}); choose a writable folder with"
                                  f" {option}") from None
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise LightningCifarError(f"only {free / 2**20:.0f} MiB free on the disk of {folder}; this needs about"
                                  f" {need_bytes / 2**20:.0f} MiB; free some space or choose another folder with"
                                  f" {option}")


def read_yaml(path: str | Path, what: str = "config", error: type[LightningCifarError] = LightningCifarError) -> Any:
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path} is a folder; pass a YAML file")
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}:{where}: malformed YAML: {problem}") from exc
    check_expanded(loaded, f"{what} {path}", error)
    return loaded
