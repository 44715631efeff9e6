"""Checkpoint files written so that a crash never leaves a half-written one.

Lightning writes local checkpoints through fsspec, which stages them in the
system temp folder and then moves them into place; when that folder is on
another filesystem the move is a copy, and a kill during the copy leaves a
truncated ``last.ckpt``. Here the bytes go to a temp file next to the target
and are renamed over it, which is atomic on a local filesystem.
"""

from __future__ import annotations

import io
from typing import Any, Optional

import torch
from lightning_fabric.utilities.cloud_io import get_filesystem
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.plugins.io import TorchCheckpointIO

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
