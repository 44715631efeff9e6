"""A frozen first layer that whitens image patches, set from the training data (the CIFAR-10 speedruns' trick).

Its filters are the eigenvectors of the covariance of all k x k patches of some training images,
each scaled by 1/sqrt(eigenvalue + eps), and their negatives: the layer maps a patch to decorrelated
coordinates of unit variance (both signs, so that the activation after it loses nothing). It is
set once, before training, and never trained; only its bias is.

Two options make it cheaper for the layers after it. ``padding="valid"`` keeps whole patches only
(a 3x3 layer turns 32x32 images into 30x30 maps, which pool to 15, 7, 3 rather than 16, 8, 4:
the network after it does about 20 % fewer FLOPs; airbench's 2x2 layer does the same, to 31x31).
``directions`` keeps the patch directions of largest variance only (the smooth ones; the noisiest,
least-varying directions go), so that the first convolution reads fewer channels.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lightning_cifar.errors import BackboneConfigError


class PatchWhitening(nn.Module):
    def __init__(self, in_channels: int, kernel: int, eps: float = 5e-4, padding: str = "same",
                 directions: Optional[int] = None) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise BackboneConfigError(
                f"whiten={kernel}: the whitening kernel must be a positive odd number (same padding)")
        if padding not in ("same", "valid"):
            raise BackboneConfigError(f"whiten_padding={padding!r}: allowed values are 'same', 'valid'")
        size = in_channels * kernel * kernel
        if directions is not None and not 1 <= directions <= size:
            raise BackboneConfigError(f"whiten_directions={directions}: a {kernel}x{kernel} patch of {in_channels}"
                                      f" channels has {size} directions; allowed 1 to {size}, or null for all")
        self.kernel, self.eps, self.padding = kernel, eps, padding
        self.directions = size if directions is None else directions
        self.out_channels = 2 * self.directions
        self.weight = nn.Parameter(torch.zeros(self.out_channels, in_channels, kernel, kernel), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(self.out_channels))
        # Saved with the weights: a resumed or loaded network is not set again from other images.
        self.register_buffer("initialised", torch.tensor(False))

    @torch.no_grad()
    def initialise(self, images: Tensor) -> None:
        """Set the filters from ``images`` (N, C, H, W), as the network sees them (standardised)."""
        c, k = images.shape[1], self.kernel
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # N, C, H', W', k, k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending: the last vary the most
        eigenvalues, eigenvectors = eigenvalues[-self.directions:], eigenvectors[:, -self.directions:]
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + self.eps)[:, None]).reshape(-1, c, k, k)
        self.weight.copy_(torch.cat([filters, -filters]).to(self.weight))
        self.initialised.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, padding=self.kernel // 2 if self.padding == "same" else 0)

    def output_size(self, size: int) -> int:
        return size if self.padding == "same" else size - self.kernel + 1
