"""``lightning-cifar export``: a checkpoint as a self-contained TorchScript or ONNX model.

The exported model takes float32 images of shape (N, 3, 32, 32) with pixel values in
[0, 1] (what ``torchvision.transforms.functional.to_tensor`` gives), applies the
normalisation the model was trained with, and returns the logits
``Classifier.predict_logits`` gives (with the flip average when trained with ``tta``).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from lightning_cifar.checkpoint_io import check_checkpoint
from lightning_cifar.data import CIFAR10_MEAN, CIFAR10_STD
from lightning_cifar.errors import LightningCifarError
from lightning_cifar.model import Classifier, evaluation_logits

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


class ExportedClassifier(nn.Module):
    """Normalisation plus the classifier's evaluation forward pass, with no Lightning inside
    (tracing a LightningModule trips over its Trainer properties)."""

    def __init__(self, model: Classifier, normalize: bool) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.tta = bool(model.hparams.tta)
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CIFAR10_STD).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        x = (images - self.mean) / self.std if self.normalize else images
        return evaluation_logits(self.backbone, x, self.tta)


def load_for_export(ckpt_path: str) -> ExportedClassifier:
    checkpoint = check_checkpoint(ckpt_path, trusted=False) or {}
    model = Classifier.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True).float()
    normalize = bool(checkpoint.get("datamodule_hyper_parameters", {}).get("normalize", True))
    return ExportedClassifier(model, normalize).eval()


def export(ckpt_path: str, fmt: str, output: Path) -> Path:
    if fmt not in FORMATS:
        raise LightningCifarError(f"--format={fmt!r}: allowed values are {', '.join(map(repr, FORMATS))}")
    net = load_for_export(ckpt_path)
    example = torch.rand(2, 3, 32, 32)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    with torch.no_grad():
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(net, example), str(tmp))
        else:
            for module in ("onnx", "onnxscript"):
                if importlib.util.find_spec(module) is None:
                    raise LightningCifarError(
                        f"--format=onnx needs the {module} package: pip install 'lightning-cifar[export]'"
                    )
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(net, (example,), str(tmp), input_names=["images"], output_names=["logits"],
                              dynamic_shapes={"images": {0: batch}}, dynamo=True, external_data=False)
    tmp.replace(output)  # a failed export never leaves a file under the final name
    return output


def export_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lightning-cifar export",
        description="Write a checkpoint as a TorchScript or ONNX model: input float32 (N, 3, 32, 32) images"
        " in [0, 1], output the logits; normalisation is built in.",
    )
    parser.add_argument("--ckpt_path", required=True, help="the .ckpt file to export")
    parser.add_argument("--format", default="onnx", help="onnx (default) or torchscript")
    parser.add_argument("--output", help="output file (default: next to the checkpoint, .onnx or .pt)")
    args = parser.parse_args(list(argv))
    suffix = FORMATS.get(args.format, "")
    output = Path(args.output) if args.output else Path(args.ckpt_path).with_suffix(suffix)
    written = export(args.ckpt_path, args.format, output)
    print(f"wrote {written} ({written.stat().st_size / 2**20:.1f} MiB, {args.format}): input 'images'"
          " float32 (N, 3, 32, 32) in [0, 1], output 'logits' (N, num_classes)")
    return 0
