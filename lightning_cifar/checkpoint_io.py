"""Checkpoint files: written so that a crash never leaves a half-written one, read only if they hold plain data.

Lightning writes local checkpoints through fsspec, which stages them in the
system temp folder and then moves them into place; when that folder is on
another filesystem the move is a copy, and a kill during the copy leaves a
truncated ``last.ckpt``. Here the bytes go to a temp file next to the target
and are renamed over it, which is atomic on a local filesystem.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Optional

import torch
from lightning_fabric.utilities.cloud_io import get_filesystem
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.plugins.io import TorchCheckpointIO

from lightning_cifar.errors import LightningCifarError
from lightning_cifar.files import atomic_write_bytes


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose local saves are write-to-temp-then-rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Optional[Any] = None) -> None:
        protocol = get_filesystem(path).protocol
        if storage_options is not None or "file" not in (protocol if isinstance(protocol, tuple) else (protocol,)):
            return super().save_checkpoint(checkpoint, path, storage_options)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())


def check_checkpoint(path: str, trusted: bool) -> Optional[dict[str, Any]]:
    """Refuse a missing checkpoint, or one that weights_only loading rejects, before anything starts.

    A checkpoint is a pickle; loaded with ``weights_only=False`` it can run any code. Ours hold
    only tensors and plain data, so they load with ``weights_only=True`` (the default here).
    Returns the checkpoint, its tensors memory-mapped rather than read (None when not checked).
    """
    if "://" in path:
        return None  # remote: Lightning fetches it itself
    if not Path(path).is_file():
        raise LightningCifarError(f"--ckpt_path={path}: no such file; pass a .ckpt file, or last / best")
    if trusted:
        return None
    try:
        try:
            # mmap: the check unpickles the structure without reading every tensor a second time.
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # a pre-zipfile checkpoint
    except Exception as exc:
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        reason = f"it holds {found.group(1)}" if found else text.strip().splitlines()[-1 if text.strip() else 0]
        raise LightningCifarError(
            f"--ckpt_path={path}: refused by weights_only loading ({reason}); a checkpoint that holds more than"
            " tensors and plain data can run code when loaded. Only if you trust the file, pass --weights_only=false"
        ) from exc
