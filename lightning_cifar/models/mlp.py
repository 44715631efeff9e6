"""Fully connected baselines: the image is flattened and never seen as an image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Optional

from torch import Tensor, nn

from lightning_cifar.errors import BackboneConfigError
from lightning_cifar.models.layers import activation_layer


class MLP(nn.Module):
    """Multi-layer perceptron on the flattened 3x32x32 image; fully configurable."""

    def __init__(
        self,
        num_classes: int = 10,
        hidden: Sequence[int] = (128, 64, 32),
        activation: str = "relu",
        norm: Optional[Literal["batch", "layer"]] = None,
        dropout: float = 0.0,
        in_features: int = 3 * 32 * 32,
    ) -> None:
        """
        Args:
            num_classes: size of the output layer.
            hidden: sizes of the hidden layers (may be empty: a linear classifier).
            activation: ``relu``, ``gelu``, ``silu``, ``elu`` or ``leaky_relu``.
            norm: ``batch``, ``layer`` or ``None``: normalisation after each hidden layer.
            dropout: dropout after each hidden layer's activation.
            in_features: flattened input size.
        """
        super().__init__()
        if norm not in (None, "batch", "layer"):
            raise BackboneConfigError(f"norm={norm!r}: allowed values are None, 'batch', 'layer'")
        if not 0.0 <= dropout < 1.0:
            raise BackboneConfigError(f"dropout {dropout}: must be in [0, 1)")
        layers: list[nn.Module] = [nn.Flatten()]
        features = in_features
        for size in hidden:
            if int(size) < 1:
                raise BackboneConfigError(f"hidden layer size {size} must be positive")
            size = int(size)
            layers.append(nn.Linear(features, size, bias=norm is None))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(size))
            elif norm == "layer":
                layers.append(nn.LayerNorm(size))
            layers.append(activation_layer(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            features = size
        layers.append(nn.Linear(features, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
