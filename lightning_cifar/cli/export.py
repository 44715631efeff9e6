"""``lightning-cifar export``: a checkpoint as a self-contained TorchScript or ONNX model.

The exported model takes what ``Classifier`` takes: float32 images of shape (N, 3, 32, 32)
with pixel values in [0, 1] (what ``torchvision.transforms.functional.to_tensor`` gives),
standardises them as the model does, and returns the logits ``Classifier.predict_logits``
gives (averaged over its ``tta`` views).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from lightning_cifar.checkpoints.compatibility import check_checkpoint_fits
from lightning_cifar.checkpoints.reading import check_checkpoint, local_checkpoint_path
from lightning_cifar.errors import LightningCifarError
from lightning_cifar.files import atomic_write_bytes, ensure_writable
from lightning_cifar.models.measure import IMAGE_SHAPE
from lightning_cifar.training.classifier import Classifier, evaluation_logits, tta_mode

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


class ExportedClassifier(nn.Module):
    """The classifier's evaluation forward pass with no Lightning inside
    (tracing a LightningModule trips over its Trainer properties)."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.input_norm = model.input_norm
        self.backbone = model.backbone
        self.tta = tta_mode(model.hparams.tta)

    def _logits(self, images: Tensor) -> Tensor:
        return self.backbone(self.input_norm(images))

    def forward(self, images: Tensor) -> Tensor:
        return evaluation_logits(self._logits, images, self.tta)


def load_for_export(ckpt_path: str) -> ExportedClassifier:
    """The checkpoint's network, checked (refusals in ``--ckpt_path``'s words) and loaded: one read each."""
    checkpoint = check_checkpoint(ckpt_path, trusted=False)
    check_checkpoint_fits(checkpoint, f"--ckpt_path={ckpt_path}")
    # Checked above: given the open file rather than its path, load_from_checkpoint does not check it again.
    with open(local_checkpoint_path(ckpt_path), "rb") as file:
        try:
            model = Classifier.load_from_checkpoint(file, map_location="cpu", weights_only=True)
        except LightningCifarError:
            raise
        except Exception as exc:  # a setting jsonargparse or the model refuses, a page long: one line naming the file
            text = " ".join(str(exc).split())
            raise LightningCifarError(f"--ckpt_path={ckpt_path}: its model settings are refused: {text[:300]}") from exc
    return ExportedClassifier(model.float()).eval()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return a.resolve() == b.resolve()


def output_path(ckpt_path: str, fmt: str, output: Optional[str], overwrite: bool) -> Path:
    """Where to write: ``--output``, or next to the checkpoint with the format's suffix.

    Never the checkpoint itself (``export --ckpt_path=model.pt`` would otherwise replace the
    training checkpoint); an existing file only with ``--overwrite``.
    """
    ckpt = Path(ckpt_path)
    if output is None:
        path = ckpt.with_suffix(FORMATS[fmt])
        if _same_file(path, ckpt):
            path = ckpt.with_name(f"{ckpt.stem}.{fmt}{FORMATS[fmt]}")
    else:
        path = Path(output)
        if _same_file(path, ckpt):
            raise LightningCifarError(
                f"--output={output} is the checkpoint being exported; choose another file name"
            )
    if path.is_dir():
        example = path / ckpt.with_suffix(FORMATS[fmt]).name
        raise LightningCifarError(f"--output={path} is a folder; give the file to write, e.g. --output={example}")
    if path.exists() and not overwrite:
        raise LightningCifarError(f"{path} already exists; pass --overwrite to replace it, or choose --output")
    return path


def export(net: ExportedClassifier, fmt: str, output: Path) -> Path:
    if fmt not in FORMATS:
        raise LightningCifarError(f"--format={fmt!r}: allowed values are {', '.join(map(repr, FORMATS))}")
    if fmt == "onnx":
        for module in ("onnx", "onnxscript"):
            if importlib.util.find_spec(module) is None:
                raise LightningCifarError(
                    f"--format=onnx needs the {module} package: pip install 'lightning-cifar[export]'"
                )
    example = torch.rand(2, *IMAGE_SHAPE)
    # Serialised in memory and written by us: TorchScript's own file writer aborts the process in C++ (exit 134,
    # its temporary file left to fill the disk) when the disk fills, and ONNX's raises mid-file; atomic_write_bytes
    # leaves the old file or the whole new one, never part of one, and names the file in one line.
    with torch.no_grad():
        if fmt == "torchscript":
            buffer = io.BytesIO()
            torch.jit.save(torch.jit.trace(net, example), buffer)
            data = buffer.getvalue()
        else:
            batch = torch.export.Dim("batch", min=1)
            program = torch.onnx.export(net, (example,), input_names=["images"], output_names=["logits"],
                                        dynamic_shapes={"images": {0: batch}}, dynamo=True)
            data = program.model_proto.SerializeToString()
    atomic_write_bytes(output, data)
    return output


def export_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lightning-cifar export",
        description="Write a checkpoint as a TorchScript or ONNX model: input float32 (N, 3, 32, 32) images"
        " in [0, 1], output the logits; standardisation is built in.",
    )
    parser.add_argument("--ckpt_path", required=True, help="the .ckpt file to export")
    parser.add_argument("--format", default="onnx", help="onnx (default) or torchscript")
    parser.add_argument("--output", help="output file (default: next to the checkpoint, .onnx or .pt;"
                        " never the checkpoint itself)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    args = parser.parse_args(list(argv))
    if args.format not in FORMATS:
        raise LightningCifarError(f"--format={args.format!r}: allowed values are {', '.join(map(repr, FORMATS))}")
    net = load_for_export(args.ckpt_path)
    output = output_path(args.ckpt_path, args.format, args.output, args.overwrite)
    # Before the work, so that a disk too full for the model is said before minutes of export, not after.
    local = local_checkpoint_path(args.ckpt_path)
    weights = os.path.getsize(local) if os.path.isfile(local) else 0
    ensure_writable(output.parent, 2 * weights + 16 * 2**20, "--output=FILE")
    written = export(net, args.format, output)
    print(f"wrote {written} ({written.stat().st_size / 2**20:.1f} MiB, {args.format}): input 'images'"
          " float32 (N, 3, 32, 32) in [0, 1], output 'logits' (N, num_classes)")
    return 0
