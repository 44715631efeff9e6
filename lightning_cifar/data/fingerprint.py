"""Which dataset a folder holds, by content: two folders with the same CIFAR-10 files have the same fingerprint
wherever they are, and a folder whose files changed has another. A study records it with every run and refuses to
mix runs of different data in one output folder (the folder's path says nothing: the same path may hold other
files tomorrow, and one dataset may sit at several paths)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Optional

from torchvision.datasets import CIFAR10

CHUNK = 1 << 20


def cifar_files() -> list[str]:
    return [name for name, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]


def data_fingerprint(data_dir: str | Path) -> Optional[str]:
    """SHA-256 (16 hex digits) of the CIFAR-10 files under ``data_dir``, names and bytes; None where one is missing
    (the run itself then says what is wrong). About half a second for the 180 MB, once per folder and process while
    its files keep their sizes and modification times."""
    folder = Path(data_dir) / CIFAR10.base_folder
    try:
        stats = [(name, (folder / name).stat()) for name in cifar_files()]
        stamps = tuple((name, stat.st_size, stat.st_mtime_ns) for name, stat in stats)
    except OSError:
        return None
    return _fingerprint(str(folder.resolve()), stamps)


@lru_cache(maxsize=8)
def _fingerprint(folder: str, stamps: tuple[tuple[str, int, int], ...]) -> Optional[str]:
    digest = hashlib.sha256()
    try:
        for name, _, _ in stamps:
            digest.update(name.encode() + b"\0")
            with open(Path(folder) / name, "rb") as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()[:16]
