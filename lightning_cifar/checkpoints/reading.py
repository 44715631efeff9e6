"""Checkpoint files read only if they hold plain data, naming no class to build."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any, Iterator, Optional
from urllib.parse import urlparse
from urllib.request import url2pathname

import torch
from pytorch_lightning import LightningDataModule, LightningModule

from lightning_cifar.errors import LightningCifarError
from lightning_cifar.files import check_expanded

# "s3://...", "https://...", and fsspec's chained "simplecache::s3://...": what Lightning would fetch itself.
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*(://|::)")
# The parts of a checkpoint that hold one entry per tensor, checked by shape (compatibility), not walked.
BULK = ("state_dict", "optimizer_states")
# Keys by which jsonargparse would import and build a class from a value.
CLASS_KEYS = ("class_path", "_class_path")
# Where Lightning keeps the model's and the data module's hyperparameters in a checkpoint.
MODEL_HPARAMS, DATA_HPARAMS = LightningModule.CHECKPOINT_HYPER_PARAMS_KEY, LightningDataModule.CHECKPOINT_HYPER_PARAMS_KEY


def class_paths(value: Any, where: str) -> Iterator[str]:
    """Where in ``value`` (nested dicts and lists) a key names a class to build."""
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}"
            if key in CLASS_KEYS:
                yield f"{here}={item!r}"
            yield from class_paths(item, here)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from class_paths(item, f"{where}[{i}]")


def read_checkpoint(path: str, label: Optional[str] = None) -> dict[str, Any]:
    """The checkpoint at ``path``, refused (one line) unless it is plain data naming no classes.

    A checkpoint is a pickle; loaded with ``weights_only=False`` it can run any code. Ours hold
    only tensors and plain data, so they load with ``weights_only=True``. Plain data is not
    enough: LightningCLI and ``load_from_checkpoint`` re-parse the stored hyperparameters, and
    a ``class_path`` there names a class to build (``subprocess.Popen`` would do). Ours never
    hold one. The tensors are memory-mapped, not read.
    """
    label = label or f"checkpoint {path}"
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise LightningCifarError(f"{label}: the file is empty (0 bytes), not a checkpoint")
    check_records_stored(path, label)
    try:
        try:
            # mmap: the check unpickles the structure without reading every tensor a second time.
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # a pre-zipfile checkpoint
    except Exception as exc:
        raise LightningCifarError(f"{label}: {refusal_reason(exc)}") from exc
    if not isinstance(checkpoint, dict):
        raise LightningCifarError(f"{label}: not a Lightning checkpoint (holds a {type(checkpoint).__name__})")
    if "state_dict" not in checkpoint:
        if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            raise LightningCifarError(
                f"{label}: a bare state_dict (weights only, no hyperparameters), not a Lightning checkpoint;"
                " load it in Python with Classifier(...).load_state_dict(torch.load(path)) and save the model"
                " with a Trainer, or pass a .ckpt written by lightning-cifar fit")
        raise LightningCifarError(f"{label}: not a Lightning checkpoint (no state_dict; it holds"
                                  f" {', '.join(map(str, list(checkpoint)[:5])) or 'nothing'})")
    # Before anything walks it (our class_paths, jsonargparse, Lightning): everything but the tensors' own mappings.
    check_expanded({k: v for k, v in checkpoint.items() if k not in BULK}, label)
    named = [hit for section in (MODEL_HPARAMS, DATA_HPARAMS) for hit in class_paths(checkpoint.get(section), section)]
    if named:
        raise LightningCifarError(
            f"{label}: refused: its hyperparameters name a class to build ({named[0]}), which would run code"
            " when the checkpoint is loaded; lightning-cifar never writes one"
        )
    return checkpoint


def check_records_stored(path: str, label: str) -> None:
    """Refuse a zip checkpoint with a compressed record, before torch.load decompresses it. torch.save stores every
    record as it is, so what a record may allocate is bounded by the file's own size; a crafted 1.9 MB file with a
    DEFLATE-compressed pickle unpacked to 2 GB and peaked at 6.7 GB before the refusal came."""
    try:
        with open(path, "rb") as file:  # one open: the zip's directory at the end of the file, no record read
            if not zipfile.is_zipfile(file):
                return  # a pre-zipfile checkpoint: a plain pickle, as large as the file
            with zipfile.ZipFile(file) as archive:
                records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise LightningCifarError(f"{label}: not a readable checkpoint ({exc})") from None
    for record in records:
        if record.compress_type != zipfile.ZIP_STORED:
            raise LightningCifarError(
                f"{label}: refused: its record {record.filename} is compressed ({record.file_size:,} bytes from"
                f" {record.compress_size:,}); torch.save stores records uncompressed, so another program made this"
                " file, and it is not unpacked here")


def refusal_reason(exc: Exception) -> str:
    """Why torch.load refused a file, in one line: the global it would have run, or what was wrong."""
    text = str(exc)
    found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", text)
    if found:
        return (f"refused: it holds {found.group(1)}, which is not plain data and could run code when loaded;"
                " lightning-cifar loads only checkpoints of tensors and plain data. If you trust the file,"
                " load it in Python with torch.load(path, weights_only=False) and save its weights again")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"not a readable checkpoint ({lines[-1] if lines else type(exc).__name__})"


def local_checkpoint_path(path: str, label: Optional[str] = None) -> str:
    """``path`` as a local file's path: a ``file://`` URL of this machine (any case, empty host or ``localhost``)
    becomes the path it names; any other URL is refused in one line. Lightning would fetch a remote checkpoint
    itself, after our checks, which could then not look at it, and LightningCLI applies a checkpoint's settings
    only to a local file: a URL was evaluated with the command line's defaults."""
    if not URL.match(path):
        return path
    parsed = urlparse(path)
    if "::" not in path.split("://")[0] and parsed.scheme.lower() == "file" and parsed.netloc.lower() in ("", "localhost"):
        return url2pathname(parsed.path)
    raise LightningCifarError(f"{label or f'--ckpt_path={path}'}: a URL; lightning-cifar reads checkpoints from local"
                              " files only, so that it can check one before anything loads it: copy the file here"
                              " and pass its path (file:///... URLs of this machine work too)")


def check_checkpoint(path: str, trusted: bool, label: Optional[str] = None) -> Optional[dict[str, Any]]:
    """The ``--ckpt_path`` check before anything starts: a local file (:func:`local_checkpoint_path`) that exists and
    that :func:`read_checkpoint` accepts. Returns the checkpoint, tensors memory-mapped (None when trusted)."""
    path = local_checkpoint_path(path, label)
    if not Path(path).is_file():
        raise LightningCifarError(f"{label or f'--ckpt_path={path}'}: no such file; pass a .ckpt file, or last / best")
    if trusted:
        return None
    return read_checkpoint(path, label or f"--ckpt_path={path}")
