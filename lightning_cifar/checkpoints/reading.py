"""Checkpoint files read only if they hold plain data, naming no class to build."""

from __future__ import annotations

import pickletools
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


def entries(value: Any, where: str) -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) of every entry nested in ``value`` (dicts and lists; lists' keys are their indices), the
    path naming where it sits (``hyper_parameters.backbone_kwargs.widths[0]``). ``value`` is bounded already
    (``files.check_expanded``), so the recursion is too."""
    if isinstance(value, dict):
        items = [(f"{where}.{key}", key, item) for key, item in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(f"{where}[{i}]", i, item) for i, item in enumerate(value)]
    else:
        return
    for here, key, item in items:
        yield here, key, item
        yield from entries(item, here)


def class_paths(value: Any, where: str) -> Iterator[str]:
    """Where in ``value`` a key names a class to build."""
    return (f"{here}={item!r}" for here, key, item in entries(value, where) if key in CLASS_KEYS)


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
    check_records(path, label)
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
    check_layout(checkpoint, label)
    named = [hit for section in (MODEL_HPARAMS, DATA_HPARAMS) for hit in class_paths(checkpoint.get(section), section)]
    if named:
        raise LightningCifarError(
            f"{label}: refused: its hyperparameters name a class to build ({named[0]}), which would run code"
            " when the checkpoint is loaded; lightning-cifar never writes one"
        )
    return checkpoint


def tensor_paths(value: Any, where: str) -> Iterator[str]:
    """Where in ``value`` a tensor sits."""
    return (here for here, _, item in entries(value, where) if isinstance(item, torch.Tensor))


def check_layout(checkpoint: dict[str, Any], label: str) -> None:
    """Refuse, in one line, a checkpoint with the right keys holding the wrong kinds of value (a state_dict that is
    text or a list, settings that are a list, a tensor as a setting, a backbone that is not a name), which used to
    end in AttributeError or TypeError tracebacks wherever they were first used."""
    weights = checkpoint["state_dict"]
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in weights.items()):
        what = f"a {type(weights).__name__}" if not isinstance(weights, dict) else "a mapping holding other things"
        raise LightningCifarError(f"{label}: its state_dict is {what}, not a mapping of names to tensors; not a"
                                  " checkpoint lightning-cifar wrote")
    for section in (MODEL_HPARAMS, DATA_HPARAMS):
        value = checkpoint.get(section)
        if value is not None and not isinstance(value, dict):
            raise LightningCifarError(f"{label}: its {section} is a {type(value).__name__}, not a mapping of settings")
        tensor = next(tensor_paths(value, section), None)
        if tensor is not None:
            raise LightningCifarError(f"{label}: {tensor} is a tensor; settings are plain values (numbers, text,"
                                      " lists, mappings)")
    model = checkpoint.get(MODEL_HPARAMS) or {}
    if "backbone" in model and not isinstance(model["backbone"], str):
        raise LightningCifarError(f"{label}: {MODEL_HPARAMS}.backbone is {model['backbone']!r}, not a backbone name")
    if not isinstance(model.get("backbone_kwargs") or {}, dict):
        raise LightningCifarError(f"{label}: {MODEL_HPARAMS}.backbone_kwargs is a"
                                  f" {type(model['backbone_kwargs']).__name__}, not a mapping of keyword arguments")


def check_records(path: str, label: str) -> None:
    """Refuse, before torch.load reads it, a zip checkpoint with a compressed record (torch.save stores every record
    as it is, so what a record may allocate is bounded by the file's own size; a crafted 1.9 MB file with a
    DEFLATE-compressed pickle unpacked to 2 GB and peaked at 6.7 GB before the refusal came), or with a tensor record
    shorter than its header says (the memory-mapped check let it through; Lightning's load then failed)."""
    try:
        with open(path, "rb") as file:  # one open: the zip's directory at the end of the file, and the structure
            if not zipfile.is_zipfile(file):
                return  # a pre-zipfile checkpoint: a plain pickle, as large as the file
            with zipfile.ZipFile(file) as archive:
                records = archive.infolist()
                structure = read_structure(archive, records, label)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise LightningCifarError(f"{label}: not a readable checkpoint ({exc})") from None
    if structure is None:
        return
    sizes = {record.filename: record.file_size for record in records}
    folder = next(name for name in sizes if name.endswith("/data.pkl"))[: -len("data.pkl")]
    for key, expected in storage_sizes(structure):
        found = sizes.get(f"{folder}data/{key}")
        if found is None or found < expected:
            raise LightningCifarError(
                f"{label}: its tensor record data/{key} holds {found or 0:,} bytes where its header says {expected:,};"
                " the file was cut short or altered")


def read_structure(archive: zipfile.ZipFile, records: list[zipfile.ZipInfo], label: str) -> Optional[bytes]:
    """The checkpoint's pickled structure (``data.pkl``), refused unless every record is stored uncompressed
    and the structure is of a sensible size; None where the archive has no structure record."""
    for record in records:
        if record.compress_type != zipfile.ZIP_STORED:
            raise LightningCifarError(
                f"{label}: refused: its record {record.filename} is compressed ({record.file_size:,} bytes from"
                f" {record.compress_size:,}); torch.save stores records uncompressed, so another program made this"
                " file, and it is not unpacked here")
    pickled = next((record for record in records if record.filename.endswith("/data.pkl")), None)
    if pickled is None:
        return None
    if pickled.file_size > MAX_PICKLE_BYTES:
        raise LightningCifarError(f"{label}: refused: its {pickled.filename} record is {pickled.file_size:,} bytes; a"
                                  " checkpoint's structure (its tensors are records of their own) is a few kilobytes")
    return archive.read(pickled)


# Bytes per element of the storage classes torch.save names in a checkpoint's structure.
ELEMENT_BYTES = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
                 "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
                 "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16}
MAX_PICKLE_BYTES = 64 * 2**20
PUSHES = {"BINUNICODE", "SHORT_BINUNICODE", "UNICODE", "BINUNICODE8", "GLOBAL", "BININT", "BININT1", "BININT2",
          "LONG1", "INT", "LONG"}


def storage_sizes(structure: bytes) -> Iterator[tuple[str, int]]:
    """(record key, bytes its header promises) for every tensor storage a checkpoint's structure names, read from
    its pickle opcodes (pickletools: nothing is built or run). torch.load with mmap does not compare the two, and a
    record shorter than its header failed later, in Lightning's load, with a RuntimeError traceback."""
    memo: dict[int, Any] = {}
    last: Any = None
    wanted: Optional[list[Any]] = None
    try:
        for op, arg, _ in pickletools.genops(structure):
            value: Any = None
            if op.name in PUSHES:
                value = arg
            elif op.name in ("BINGET", "LONG_BINGET", "GET"):
                value = memo.get(int(arg))
            elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = last
                continue
            elif op.name == "MEMOIZE":
                memo[len(memo)] = last
                continue
            else:
                continue
            last = value
            if wanted is not None:
                wanted.append(value)
                if len(wanted) == 4:  # storage type, key, location, number of elements
                    kind, key, _, numel = wanted
                    size = ELEMENT_BYTES.get(str(kind).split(" ")[-1])
                    if size is not None and isinstance(numel, int):
                        yield str(key), numel * size
                    wanted = None
            elif value == "storage":
                wanted = []
    except Exception:  # not a pickle genops can read: torch.load says what is wrong with it
        return


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
    this_machine = parsed.netloc.lower() in ("", "localhost")
    if "::" not in path.split("://")[0] and parsed.scheme.lower() == "file" and this_machine:
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
