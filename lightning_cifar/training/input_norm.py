"""The model's input contract: float images in [0, 1], standardised inside the model.

The model, not the data pipeline, owns this step (as torchvision's weights and
timm's pretrained configs do): whoever loads a checkpoint or an exported model
feeds it ordinary [0, 1] images and gets the logits it was trained to give.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Channel mean and standard deviation of the CIFAR-10 training images, in [0, 1] units.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class Standardize(nn.Module):
    """``(x - mean) / std`` per channel, or the identity when ``enabled`` is False.

    The constants are non-persistent buffers: they follow the module to its device
    and dtype, but are not part of the state dict (checkpoints written before the
    model owned its input still load).
    """

    def __init__(self, enabled: bool = True, mean: tuple[float, ...] = CIFAR10_MEAN,
                 std: tuple[float, ...] = CIFAR10_STD) -> None:
        super().__init__()
        self.enabled = bool(enabled)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"enabled={self.enabled}"
