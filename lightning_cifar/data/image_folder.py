"""Images from a folder of PNG/JPEG files, made to look like CIFAR-10 for ``lightning predict``."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as F

from lightning_cifar.errors import DataError
from lightning_cifar.files import printable

SUFFIXES = (".png", ".jpg", ".jpeg")
SIZE = 32
# Images larger than this are skipped unread: 100 megapixels (10,000 x 10,000) is far above any photo one
# would classify at 32x32, and decoding one takes 300 MB. A 76 KB PNG can claim 20,000 x 20,000 pixels.
MAX_IMAGE_PIXELS = 100_000_000
# No image format needs more than 16-bit RGBA, uncompressed, per pixel (8 bytes): a file larger than that for the
# pixel limit is not an image we would decode, and is skipped before it is read (a 3 GB sparse file with a PNG
# header was read whole, twice: 7.1 GB).
MAX_BYTES_PER_PIXEL = 8


def byte_limit(max_pixels: int) -> int:
    return max_pixels * MAX_BYTES_PER_PIXEL + 2**20  # and a megabyte of headers and metadata


@dataclass
class FolderImages:
    images: Tensor  # (N, 3, 32, 32) uint8
    files: list[str]  # relative to the folder, in the order of ``images``
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)


def to_cifar_size(image: Tensor) -> Tensor:
    """The central square (the shorter side), then 32x32 antialiased: objects keep their proportions, and
    memory follows the output. (Resizing first made a 1 x 1,000,000 image 32 x 32,000,000 pixels.)"""
    side = min(image.shape[-2:])
    return F.resize(F.center_crop(image, [side, side]), [SIZE, SIZE], antialias=True)


def as_uint8(image: Tensor) -> Tensor:
    """Scaled by the range of its dtype: a 16-bit PNG decodes as uint16 (0..65535)."""
    return image if image.dtype == torch.uint8 else F.to_dtype(image, torch.uint8, scale=True)


def pixel_count(path: Path) -> tuple[int, bool]:
    """Width x height of the (first) frame from the file's header, without decoding it (PIL reads headers
    lazily), and whether the file holds several frames (an animated GIF or PNG, whatever its name)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit decides, below
        try:
            with Image.open(path) as image:
                width, height = image.size
                animated = bool(getattr(image, "is_animated", False))
        except Image.DecompressionBombError as exc:  # PIL refuses to open it at all; its message has the size
            found = re.search(r"\((\d+) pixels\)", str(exc))
            return (int(found.group(1)) if found else 2 * (Image.MAX_IMAGE_PIXELS or 0) + 1), False
    return width * height, animated


def first_frame(path: Path) -> Tensor:
    """The first frame of an animated image, decoded alone: decoding them all took frames x canvas (2,000 tiny
    frames: 6.7 GB) and gave a stack that stopped the whole folder's predictions."""
    with Image.open(path) as image:
        image.seek(0)
        rgb = np.asarray(image.convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


def load_image_folder(folder: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> FolderImages:
    """Every PNG/JPEG under ``folder`` (sorted, subfolders included), RGB, 32x32; unreadable ones and
    ones over ``max_pixels`` skipped (with the reason), the others still read."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"predict_dir={str(folder)!r} is not a folder; pass a folder of .png / .jpg images")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and not p.is_dir())
    images, files, skipped = [], [], []
    for path in paths:
        name = printable(path.relative_to(folder).as_posix())  # a name that is not UTF-8 is shown escaped
        if not path.is_file():  # a FIFO would block the read; a device could be endless; a dangling link is nothing
            skipped.append((name, "not a regular file (a FIFO, socket, device or broken link); not opened"))
            continue
        try:
            size = path.stat().st_size
            if size > byte_limit(max_pixels):
                skipped.append((name, f"{size:,} bytes, more than an image of {max_pixels:,} pixels needs"
                                      " (--data.max_image_pixels)"))
                continue
            pixels, animated = pixel_count(path)
            if pixels > max_pixels:
                skipped.append((name, f"{pixels:,} pixels, over the limit of {max_pixels:,}"
                                      " (--data.max_image_pixels)"))
                continue
            if animated:
                image = first_frame(path)
            else:
                # RGB mode drops alpha and expands greyscale and palette images to three channels. Read once by
                # numpy (torchvision's own reader refuses names that are not UTF-8), decoded from that buffer.
                encoded = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
                image = decode_image(encoded, mode=ImageReadMode.RGB)
                image = image[0] if image.ndim == 4 else image  # a multi-frame file PIL did not see as one
        except (RuntimeError, ValueError, OSError, SyntaxError) as exc:  # PIL reports bad headers as SyntaxError
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            # torchvision prefixes its C++ source location: "decode_image, .../decode_image.cpp:61, Unsupported..."
            reason = re.sub(r"^.*\.cpp:\d+,\s*", "", text)
            skipped.append((name, reason))
            continue
        images.append(to_cifar_size(as_uint8(image)))
        files.append(name)
    if not images:
        found = f"{len(skipped)} skipped: {skipped[0][0]}: {skipped[0][1]}" if skipped else "none"
        raise DataError(f"no readable PNG/JPEG images in {folder} ({found}); allowed suffixes: {', '.join(SUFFIXES)}")
    return FolderImages(torch.stack(images), files, skipped)
