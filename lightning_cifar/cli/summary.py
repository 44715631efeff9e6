"""``lightning-cifar summary``: a backbone's layers, output shapes, kernel sizes, parameters and FLOPs."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import yaml
from torch import nn

from lightning_cifar import registry
from lightning_cifar.files import read_yaml
from lightning_cifar.errors import LightningCifarError



def forward_flops(module: nn.Module) -> int:
    """FLOPs of one image's forward pass, counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = module.training
    module.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.zeros(1, *registry.INPUT_SHAPE))
    module.train(was_training)
    return int(counter.get_total_flops())


@dataclass
class Layer:
    name: str
    kind: str
    kernel: str
    output: tuple[int, ...]
    params: int


def layer_table(net: nn.Module) -> list[Layer]:
    """Every leaf module in call order, with its output shape for one 3x32x32 image."""
    layers: list[Layer] = []
    names = {m: n for n, m in net.named_modules()}

    def record(module: nn.Module, _inputs: Any, output: Any) -> None:
        kernel = getattr(module, "kernel_size", None)
        if isinstance(kernel, int):
            kernel = (kernel, kernel)
        shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
        params = sum(p.numel() for p in module.parameters(recurse=False))
        layers.append(Layer(names[module], type(module).__name__, "x".join(map(str, kernel)) if kernel else "",
                            shape, params))

    hooks = [m.register_forward_hook(record) for m in net.modules() if not list(m.children())]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, *registry.INPUT_SHAPE))
    finally:
        for hook in hooks:
            hook.remove()
        net.train(was_training)
    return layers


def render(name: str, kwargs: dict[str, Any], net: nn.Module) -> str:
    layers = layer_table(net)
    rows = [("layer", "type", "kernel", "output", "params")]
    rows += [(l.name, l.kind, l.kernel, "x".join(map(str, l.output)), f"{l.params:,}") for l in layers]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [f"{name}{' ' + json.dumps(kwargs) if kwargs else ''}", ""]
    for i, row in enumerate(rows):
        cells = (c.rjust(w) if j == 4 else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths)))
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    params, flops = registry.count_parameters(net), forward_flops(net)
    lines += ["", f"total parameters: {params:,}", f"FLOPs per image (forward): {flops:,} ({flops / 1e6:.1f} M)"]
    return "\n".join(lines)


def parse_kwargs(text: str) -> dict[str, Any]:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LightningCifarError(f"--model.backbone_kwargs={text!r}: not valid JSON/YAML ({exc})") from None
    if not isinstance(value, dict):
        raise LightningCifarError(f"--model.backbone_kwargs={text!r}: must be a mapping, e.g. '{{\"width_mult\": 2}}'")
    return value


def summary_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lightning-cifar summary",
        description="Layer table of a backbone (output shape, kernel, parameters per layer), total parameters"
        " and forward FLOPs per 3x32x32 image.",
    )
    parser.add_argument("-c", "--config", help="a fit config whose model section names the backbone")
    parser.add_argument("--model.backbone", dest="backbone", help="registered backbone name (default: cnn_base)")
    parser.add_argument("--model.backbone_kwargs", dest="kwargs", help="JSON/YAML mapping, e.g. '{\"width_mult\": 2}'")
    parser.add_argument("--model.num_classes", dest="num_classes", type=int, default=10)
    args = parser.parse_args(list(argv))
    model: dict[str, Any] = {}
    if args.config:
        config = read_yaml(args.config) or {}
        model = (config.get("model") or {}) if isinstance(config, dict) else {}
    name: Optional[str] = args.backbone or model.get("backbone") or "cnn_base"
    kwargs = parse_kwargs(args.kwargs) if args.kwargs else dict(model.get("backbone_kwargs") or {})
    net = registry.create(name, num_classes=args.num_classes, **kwargs)
    print(render(name, kwargs, net))
    return 0


@dataclass
class SpatialProfile:
    """What the convolutions and poolings of a network see: the receptive field of one output unit
    of the last spatial layer (in input pixels), that layer's map size, and each conv's kernel."""

    receptive_field: Optional[int]  # None for a network without spatial layers (an MLP)
    final_map: Optional[int]
    conv_kernels: list[int]


def spatial_profile(net: nn.Module) -> SpatialProfile:
    """Receptive field by the usual recurrence over the conv and pool layers in call order:
    r += (k - 1) * jump, jump *= stride (dilation 1)."""
    spatial: list[tuple[nn.Module, int]] = []

    def record(module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            spatial.append((module, int(output.shape[-1])))

    kinds = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
    hooks = [m.register_forward_hook(record) for m in net.modules() if isinstance(m, kinds)]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, *registry.INPUT_SHAPE))
    finally:
        for hook in hooks:
            hook.remove()
        net.train(was_training)
    if not spatial:
        return SpatialProfile(None, None, [])
    field_size, jump, kernels = 1, 1, []
    for module, _ in spatial:
        k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        stride = module.stride if isinstance(module.stride, int) else module.stride[0]
        field_size += (k - 1) * jump
        jump *= stride
        if isinstance(module, nn.Conv2d):
            kernels.append(k)
    return SpatialProfile(field_size, spatial[-1][1], kernels)
