"""PNG files written byte by byte, for what PIL will not write: 16-bit RGB, and headers that claim
more pixels than the file holds."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png16(path: Path, rgb: np.ndarray) -> Path:
    """An RGB PNG with 16 bits per channel from an (H, W, 3) uint16 array."""
    height, width, _ = rgb.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb)  # filter type 0 per row
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    Path(path).write_bytes(SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows))
                           + _chunk(b"IEND", b""))
    return Path(path)


def write_png_claiming(path: Path, width: int, height: int) -> Path:
    """A valid PNG header for ``width`` x ``height`` 8-bit RGB pixels, and one row of data: a few hundred
    bytes that a decoder that trusts the header would allocate width x height x 3 bytes for."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    Path(path).write_bytes(SIGNATURE + _chunk(b"IHDR", header)
                           + _chunk(b"IDAT", zlib.compress(b"\x00" + b"\x80" * 3 * min(width, 1000)))
                           + _chunk(b"IEND", b""))
    return Path(path)
