"""Reading the CIFAR-10 batch files without letting them run code.

The official files are Python pickles, and unpickling can call any importable
function. The MD5 check guards the official files; files loaded with the check
switched off (test sets, re-packed copies) are guarded only by this module: the
unpickler resolves nothing but the few globals the official files use, so a
crafted file is refused before any of its code runs.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np

def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1").
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not latin-1 text")
    return text.encode("latin1")


# The most numbers one array of a batch file may hold: all 60,000 CIFAR-10 images in one file.
MAX_ARRAY_ELEMENTS = 60_000 * 3072


class _FilledArray(np.ndarray):
    """What numpy's ``_reconstruct`` makes while unpickling, before the pickle's BUILD fills it.

    numpy pickles an array as ``_reconstruct(ndarray, (0,), b"b")`` (an empty array) followed by
    ``__setstate__((version, shape, dtype, fortran, raw bytes))``. This class checks that state before
    numpy allocates anything: a plain numeric dtype, at most :data:`MAX_ARRAY_ELEMENTS` numbers, and
    exactly as many bytes in the file as the shape needs. A crafted file cannot make it allocate more
    than it holds (an array with a shape and no pixel bytes, or an object array of 2e8 entries).
    """

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("an array's pickled state is not numpy's (version, shape, dtype, order, data)")
        _, shape, dtype, _, raw = state
        if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.kind not in "biuf":
            raise pickle.UnpicklingError(f"refuses an array of dtype {dtype!r}: batch files hold numeric arrays")
        if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise pickle.UnpicklingError(f"refuses an array of shape {shape!r}")
        count = int(np.prod(shape, dtype=object))
        if count > MAX_ARRAY_ELEMENTS:
            raise pickle.UnpicklingError(f"refuses an array of {count:,} numbers: the format holds at most"
                                         f" {MAX_ARRAY_ELEMENTS:,} (60,000 images of 3,072 bytes)")
        # Python 2's pickles (the official files) hold the bytes as a str, read as latin-1: one char per byte.
        if not isinstance(raw, (bytes, bytearray, str)) or len(raw) != count * dtype.itemsize:
            size = f"{len(raw):,}" if isinstance(raw, (bytes, bytearray, str)) else f"no bytes ({type(raw).__name__})"
            raise pickle.UnpicklingError(f"an array of shape {shape} needs {count * dtype.itemsize:,} bytes of data,"
                                         f" the file holds {size}")
        super().__setstate__(state)


def _reconstruct_empty(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    # Only the empty array numpy's own pickles start from: its size comes from the checked state.
    if subtype is not np.ndarray or tuple(shape) != (0,):
        raise pickle.UnpicklingError(f"refuses numpy _reconstruct({getattr(subtype, '__name__', subtype)}, {shape!r}):"
                                     " numpy pickles reconstruct an empty array and fill it from the file's bytes")
    return np.ndarray.__new__(_FilledArray, (0,), np.uint8)


def _empty_bytes(*args: Any) -> bytes:
    # Protocol 2 writes b"" (the pixels of an empty array) as bytes(); bytes(10**12) would allocate a terabyte.
    if args:
        raise pickle.UnpicklingError(f"refuses bytes{args!r}: only an empty bytes() appears in batch files")
    return b""


ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_empty,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_empty,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refuses to load {module}.{name}: CIFAR-10 batch files hold only dicts, lists, strings,"
                " numbers and uint8 numpy arrays"
            ) from None


def load(path: Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (latin-1, as the Python 2 originals need)."""
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, encoding="latin1").load()


def load_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """Images (N x 3072 uint8) and labels of one data/test batch file, checked for shape and range."""
    entry = load(path)
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        raise pickle.UnpicklingError("not a CIFAR-10 batch: expected a dict with 'data' and 'labels'")
    data, labels = entry["data"], entry["labels"]
    if isinstance(data, _FilledArray):
        data = data.view(np.ndarray)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise pickle.UnpicklingError(
            f"'data' must be a uint8 array of N x 3072 pixels, got {type(data).__name__} {shape}"
        )
    if not isinstance(labels, list) or len(labels) != len(data):
        raise pickle.UnpicklingError(f"'labels' must be a list of {len(data)} class indices")
    if not all(isinstance(label, int) and 0 <= label < 10 for label in labels):
        raise pickle.UnpicklingError("'labels' must hold class indices from 0 to 9")
    return data, labels


def load_class_names(path: Path) -> list[str]:
    """The ``label_names`` of ``batches.meta``."""
    meta = load(path)
    names = meta.get("label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise pickle.UnpicklingError("not CIFAR-10 metadata: expected a dict with a list of 'label_names'")
    return names
