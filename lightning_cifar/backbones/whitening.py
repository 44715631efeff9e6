"""A frozen first layer that whitens image patches, set from the training data (the CIFAR-10 speedruns' trick).

Its filters are the eigenvectors of the covariance of all k x k patches of some training images,
each scaled by 1/sqrt(eigenvalue + eps), and their negatives: the layer maps a patch to decorrelated
coordinates of unit variance (both signs, so that the activation after it loses nothing). It is
set once, before training, and never trained; only its bias is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lightning_cifar.errors import BackboneConfigError


class PatchWhitening(nn.Module):
    def __init__(self, in_channels: int, kernel: int, eps: float = 5e-4) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise BackboneConfigError(
                f"whiten={kernel}: the whitening kernel must be a positive odd number (same padding)")
        self.kernel, self.eps = kernel, eps
        self.out_channels = 2 * in_channels * kernel * kernel
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
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + self.eps)[:, None]).reshape(-1, c, k, k)
        self.weight.copy_(torch.cat([filters, -filters]).to(self.weight))
        self.initialised.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, padding=self.kernel // 2)
