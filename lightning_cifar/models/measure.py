"""What a network costs and sees, measured on one CIFAR-10 image: parameters, FLOPs, the layer table,
the receptive field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# One CIFAR-10 image: what every backbone takes, (N, *IMAGE_SHAPE) -> (N, num_classes).
IMAGE_SHAPE = (3, 32, 32)


def _one_image(net: nn.Module, watched: list[nn.Module], hook: Any) -> None:
    """One zero image through ``net`` in eval mode with ``hook`` on the ``watched`` modules' outputs; the
    hooks removed and the module's train/eval mode restored afterwards."""
    handles = [m.register_forward_hook(hook) for m in watched]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, *IMAGE_SHAPE))
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def forward_flops(module: nn.Module) -> int:
    """FLOPs of one image's forward pass, counted by torch's FLOP counter."""
    was_training = module.training
    module.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.zeros(1, *IMAGE_SHAPE))
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

    _one_image(net, [m for m in net.modules() if not list(m.children())], record)
    return layers


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
    _one_image(net, [m for m in net.modules() if isinstance(m, kinds)], record)
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
