"""Images from a folder of PNG/JPEG files, made to look like CIFAR-10 for ``lightning predict``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as F

from lightning_cifar.errors import DataError

SUFFIXES = (".png", ".jpg", ".jpeg")
SIZE = 32


@dataclass
class FolderImages:
    images: Tensor  # (N, 3, 32, 32) uint8
    files: list[str]  # relative to the folder, in the order of ``images``
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)


def to_cifar_size(image: Tensor) -> Tensor:
    """Shorter side to 32 pixels (antialiased), then the central 32x32: objects keep their proportions."""
    image = F.resize(image, [SIZE], antialias=True)
    return F.center_crop(image, [SIZE, SIZE])


def load_image_folder(folder: Path) -> FolderImages:
    """Every PNG/JPEG under ``folder`` (sorted, subfolders included), RGB, 32x32; unreadable ones skipped."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"predict_dir={str(folder)!r} is not a folder; pass a folder of .png / .jpg images")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    images, files, skipped = [], [], []
    for path in paths:
        name = path.relative_to(folder).as_posix()
        try:
            # RGB mode drops alpha and expands greyscale and palette images to three channels.
            image = decode_image(str(path), mode=ImageReadMode.RGB)
        except (RuntimeError, ValueError, OSError) as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            # torchvision prefixes its C++ source location: "decode_image, .../decode_image.cpp:61, Unsupported..."
            reason = re.sub(r"^.*\.cpp:\d+,\s*", "", text)
            skipped.append((name, reason))
            continue
        images.append(to_cifar_size(image))
        files.append(name)
    if not images:
        found = f"{len(skipped)} unreadable" if skipped else "none"
        raise DataError(f"no readable PNG/JPEG images in {folder} ({found}); allowed suffixes: {', '.join(SUFFIXES)}")
    return FolderImages(torch.stack(images), files, skipped)
