"""Conv-pool networks: blocks of same-kernel convolutions followed by pooling.

Kernel sizes may stay equal or fall from block to block (7 -> 5 -> 3), never
rise: early layers see large, coarse patterns, later ones combine small
neighbourhoods of already pooled features. Width (``width_mult``) and depth
(``blocks``, ``convs_per_block``) are plain parameters so that a sweep needs no
new classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Union

import torch
from torch import Tensor, nn

from lightning_cifar.errors import BackboneConfigError
from lightning_cifar.models.layers import activation_layer
from lightning_cifar.models.whitening import PatchWhitening

Width = Union[int, Sequence[int]]

INPUT_SIZE = 32
POOL_POSITIONS = ("last", "first", "first_conv")


def _per_block(value, n: int, what: str) -> list:
    """Broadcast a scalar to ``n`` blocks, or check a sequence has ``n`` entries."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n:
            raise BackboneConfigError(f"{what} has {len(value)} entries {list(value)}, expected one per block ({n})")
        return list(value)
    return [value] * n


def _resolve_blocks(widths: Sequence[Width], kernels: Sequence[int], blocks: int | None):
    """Cut or extend the per-block lists to ``blocks`` blocks.

    Extra blocks double the last block's (first) width and reuse its kernel,
    the usual way conv-pool stacks grow.
    """
    widths, kernels = list(widths), list(kernels)
    if blocks is None:
        return widths, kernels
    if blocks < 1:
        raise BackboneConfigError(f"blocks={blocks}: a conv-pool net needs at least 1 block")
    while len(widths) < blocks:
        last = widths[-1]
        first = last[0] if isinstance(last, Sequence) else last
        widths.append(2 * int(first))
    while len(kernels) < blocks:
        kernels.append(kernels[-1])
    return widths[:blocks], kernels[:blocks]


class ConvPoolNet(nn.Module):
    """Conv-pool CNN with non-increasing kernel sizes; fully configurable."""

    def __init__(
        self,
        num_classes: int = 10,
        widths: Sequence[Width] = (32, 64, 128),
        kernels: Sequence[int] = (7, 5, 3),
        convs_per_block: Union[int, Sequence[int]] = 1,
        width_mult: float = 1.0,
        blocks: int | None = None,
        norm: bool = True,
        activation: str = "relu",
        pool: Literal["max", "avg"] = "max",
        pool_position: Literal["last", "first", "first_conv"] = "last",
        dropout: Union[float, Sequence[float]] = 0.0,
        head: Literal["global", "global_max", "flatten"] = "global",
        dense: Sequence[int] = (),
        head_dropout: float = 0.0,
        in_channels: int = 3,
        whiten: int = 0,
        whiten_padding: Literal["same", "valid"] = "same",
        whiten_directions: int | None = None,
        dirac: bool = False,
        norm_momentum: float = 0.1,
        norm_scale: bool = True,
        head_scale: float = 1.0,
        head_bias: bool = True,
    ) -> None:
        """
        Args:
            num_classes: size of the output layer.
            widths: filters per block; an entry may be a list giving the filters of
                each convolution in that block (e.g. ``[[16, 32], [64, 128]]``).
            kernels: kernel size per block; odd, and never larger than the previous block's.
            convs_per_block: convolutions per block (one number, or one per block);
                ignored for blocks whose width entry is a list.
            width_mult: multiplies every width (rounded, at least 1 filter).
            blocks: number of blocks; fewer than ``len(widths)`` keeps the first ones,
                more adds blocks that double the last width and reuse its kernel.
            norm: batch norm after every convolution.
            activation: ``relu``, ``gelu``, ``silu``, ``elu`` or ``leaky_relu``.
            pool: ``max`` or ``avg`` 2x2 pooling, once per block.
            pool_position: pool after the block's ``last`` convolution (classic), after its
                ``first`` (the block's later convolutions run at a quarter of the pixels, for
                about half the cost), or at ``first_conv``: right after the first convolution,
                before its batch norm and activation, as airbench does (they too then run at a
                quarter of the pixels; on a CPU they cost as much time as the convolutions).
            dropout: dropout after each block's pooling (one number or one per block).
            head: ``global`` (global average pooling), ``global_max`` (the largest response of each
                filter anywhere, as airbench's last pooling) or ``flatten`` (as in Keras).
            dense: hidden sizes of dense layers in the head, before the classifier.
            head_dropout: dropout right before the classifier layer.
            in_channels: input channels.
            whiten: kernel size of a frozen patch-whitening first layer set from the training
                images before training (``lightning_cifar/models/whitening.py``), followed by
                the activation; 0 for none. It counts as a block for the kernel rule: its kernel
                is at least the first block's.
            whiten_padding: ``same`` (the maps stay 32x32) or ``valid`` (whole patches only: 30x30
                for a 3x3 layer, pooled to 15, 7, 3, about 20 % fewer FLOPs after it).
            whiten_directions: patch directions the whitening layer keeps, those of largest variance
                (each gives two channels, both signs); null for all (27 for a 3x3 layer).
            dirac: start each convolution as the identity on its first input channels (the rest
                as PyTorch initialises them), as the speedruns do.
            norm_momentum: batch norm's running-statistics momentum (PyTorch's convention: the
                weight of the new batch; the speedruns use 0.4).
            norm_scale: train batch norm's scale; false keeps it at 1 (only the shift trains).
            head_scale: multiplies the logits, which for a linear classifier amounts to a smaller initial
                classifier and a lower learning rate for it alone; the speedruns tuned it to 1/9.
            head_bias: give the classifier a bias. airbench's has none; with ``bias_lr`` (the model's
                rate for vectors) a bias there would train at the biases' high rate and shift whole logits.
        """
        super().__init__()
        if num_classes < 1:
            raise BackboneConfigError(f"num_classes={num_classes}: must be at least 1")
        if not widths:
            raise BackboneConfigError("widths is empty: give at least one block width, e.g. [32, 64, 128]")
        # YAML's true is Python's True, an int: "width_mult: true" was taken as 1.
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or width_mult <= 0:
            raise BackboneConfigError(f"width_mult={width_mult!r}: must be a number > 0")
        for name, value in (("convs_per_block", convs_per_block), ("blocks", blocks)):
            if isinstance(value, bool):
                raise BackboneConfigError(f"{name}={value!r}: must be a whole number, not true/false")
        if pool not in ("max", "avg"):
            raise BackboneConfigError(f"pool={pool!r}: allowed values are 'max', 'avg'")
        if pool_position not in POOL_POSITIONS:
            allowed = ", ".join(map(repr, POOL_POSITIONS))
            raise BackboneConfigError(f"pool_position={pool_position!r}: allowed values are {allowed}")
        if head not in ("global", "global_max", "flatten"):
            raise BackboneConfigError(f"head={head!r}: allowed values are 'global', 'global_max', 'flatten'")
        widths, kernels = _resolve_blocks(widths, kernels, blocks)
        n = len(widths)
        kernels = _per_block(kernels, n, "kernels")
        convs = _per_block(convs_per_block, n, "convs_per_block")
        drops = _per_block(dropout, n, "dropout")
        for p in [*drops, head_dropout]:
            if not 0.0 <= p < 1.0:
                raise BackboneConfigError(f"dropout {p}: must be in [0, 1)")

        if not head_scale > 0:
            raise BackboneConfigError(f"head_scale={head_scale}: must be > 0")
        if not 0.0 < norm_momentum <= 1.0:
            raise BackboneConfigError(f"norm_momentum={norm_momentum}: must be in (0, 1]")
        layers: list[nn.Module] = []
        channels, size = in_channels, INPUT_SIZE
        if not whiten and (whiten_padding != "same" or whiten_directions is not None):
            raise BackboneConfigError(f"whiten_padding={whiten_padding!r}, whiten_directions={whiten_directions}:"
                                      " these set the whitening layer; add one with whiten=3 (or another odd kernel)")
        if whiten:
            if kernels and kernels[0] > whiten:
                raise BackboneConfigError(
                    f"kernel sizes must not increase from block to block; the whitening layer counts as one:"
                    f" whiten={whiten} < block 1's {kernels[0]}")
            whitening = PatchWhitening(in_channels, whiten, padding=whiten_padding, directions=whiten_directions)
            layers += [whitening, activation_layer(activation)]
            channels, size = whitening.out_channels, whitening.output_size(size)
        for b, (width, kernel, n_convs, drop) in enumerate(zip(widths, kernels, convs, drops), start=1):
            if kernel < 1 or kernel % 2 == 0:
                raise BackboneConfigError(
                    f"block {b}: kernel size {kernel} must be a positive odd number (same padding)"
                )
            if b > 1 and kernel > kernels[b - 2]:
                raise BackboneConfigError(
                    f"kernel sizes must not increase from block to block, got {kernels}"
                    f" (block {b}: {kernel} > {kernels[b - 2]})"
                )
            block_widths = list(width) if isinstance(width, Sequence) else [width] * int(n_convs)
            if not block_widths:
                raise BackboneConfigError(f"block {b}: needs at least one convolution")
            size //= 2
            if size < 1:
                raise BackboneConfigError(
                    f"block {b}: a {INPUT_SIZE}x{INPUT_SIZE} input is pooled below 1x1 after"
                    f" {b} blocks; use at most {b - 1} blocks"
                )
            pool_at = len(block_widths) - 1 if pool_position == "last" else 0
            pool_layer = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
            for i, w in enumerate(block_widths):
                if int(w) < 1:
                    raise BackboneConfigError(f"block {b}: width {w} must be a positive number of filters")
                out = max(1, round(int(w) * width_mult))
                conv = nn.Conv2d(channels, out, kernel, padding=kernel // 2, bias=not norm)
                if dirac:
                    with torch.no_grad():
                        nn.init.dirac_(conv.weight[: min(out, channels)])
                layers.append(conv)
                if i == pool_at and pool_position == "first_conv":
                    layers.append(pool_layer)
                if norm:
                    bn = nn.BatchNorm2d(out, momentum=norm_momentum)
                    bn.weight.requires_grad_(norm_scale)
                    layers.append(bn)
                layers.append(activation_layer(activation))
                if i == pool_at and pool_position != "first_conv":
                    layers.append(pool_layer)
                channels = out
            if drop > 0:
                layers.append(nn.Dropout(drop))
        self.features = nn.Sequential(*layers)

        head_layers: list[nn.Module] = []
        if head in ("global", "global_max"):
            head_layers += [nn.AdaptiveAvgPool2d(1) if head == "global" else nn.AdaptiveMaxPool2d(1), nn.Flatten()]
            features = channels
        else:
            head_layers.append(nn.Flatten())
            features = channels * size * size
        for hidden in dense:
            if int(hidden) < 1:
                raise BackboneConfigError(f"dense layer size {hidden} must be positive")
            head_layers += [nn.Linear(features, int(hidden)), activation_layer(activation)]
            features = int(hidden)
        if head_dropout > 0:
            head_layers.append(nn.Dropout(head_dropout))
        head_layers.append(nn.Linear(features, num_classes, bias=head_bias))
        self.head = nn.Sequential(*head_layers)
        self.kernels = list(kernels)
        self.head_scale = float(head_scale)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.head(self.features(x))
        return logits * self.head_scale if self.head_scale != 1.0 else logits

    def needs_data(self) -> bool:
        """Whether a whitening layer waits to be set from training images (not once set, also by a checkpoint)."""
        first = self.features[0] if len(self.features) else None
        return isinstance(first, PatchWhitening) and not bool(first.initialised)

    def initialise_from_data(self, images: Tensor) -> None:
        """Set the whitening layer from training images (standardised, as the network sees them);
        nothing to do without one, or once it is set (also when set by a loaded checkpoint)."""
        if self.needs_data():
            self.features[0].initialise(images)
