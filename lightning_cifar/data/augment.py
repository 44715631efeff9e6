"""Batched, per-sample data augmentation on whatever device the batch lives on.

Each function takes a float batch ``(N, C, H, W)`` and draws independent random
parameters for every image, with whole-batch tensor operations only: no Python
loop over images, so it runs as fast on a GPU as the model itself.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_cifar.errors import LightningCifarError


def _uniform(n: int, low: float, high: float, like: Tensor) -> Tensor:
    return torch.empty(n, device=like.device, dtype=torch.float32).uniform_(low, high)


def random_flip(x: Tensor, p: float = 0.5) -> Tensor:
    """Mirror each image left-right with probability ``p``."""
    flip = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_translate(x: Tensor, pad: int = 4) -> Tensor:
    """Shift each image by up to ``pad`` pixels in each direction, filling by reflection.

    This is the classic "pad 4 and random-crop 32" CIFAR augmentation.
    """
    if pad == 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def crop_flip(x: Tensor) -> Tensor:
    """Random translation by up to 4 pixels (reflect padding) and a random horizontal flip."""
    return random_flip(random_translate(x, pad=4))


def random_affine(
    x: Tensor,
    degrees: float = 10.0,
    shift: float = 0.1,
    zoom: float = 0.2,
    flip_p: float = 0.5,
) -> Tensor:
    """Keras ``ImageDataGenerator``-style affine jitter, per image.

    Rotation uniform in ``[-degrees, degrees]``, shift uniform in ``[-shift, shift]``
    of the image size along each axis, zoom factors drawn independently per axis
    from ``[1 - zoom, 1 + zoom]``, horizontal flip with probability ``flip_p``,
    bilinear sampling, and points outside filled with the nearest edge pixel
    (Keras' ``fill_mode='nearest'``).
    """
    n = x.shape[0]
    angle = _uniform(n, -degrees, degrees, x) * (math.pi / 180.0)
    zx = _uniform(n, 1.0 - zoom, 1.0 + zoom, x)
    zy = _uniform(n, 1.0 - zoom, 1.0 + zoom, x)
    # affine_grid works in [-1, 1] coordinates, where the image spans 2 units.
    tx = _uniform(n, -shift, shift, x) * 2.0
    ty = _uniform(n, -shift, shift, x) * 2.0
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [
            torch.stack([cos * zx, -sin * zy, tx], dim=1),
            torch.stack([sin * zx, cos * zy, ty], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return random_flip(out, flip_p)


def identity(x: Tensor) -> Tensor:
    """No augmentation."""
    return x


def image_bits(images: Tensor) -> Tensor:
    """One fixed bit per image, from its own pixels (the parity of their sum): the same image gets the
    same bit in every epoch and every batch, without the loader having to carry image indices."""
    return images.flatten(1).sum(1, dtype=torch.int64) % 2 == 1


def alternating_flip(x: Tensor, raw: Tensor, epoch: int) -> Tensor:
    """Each image mirrored in every other epoch, half of them starting with even epochs and half with
    odd ones (by :func:`image_bits` of the unaugmented ``raw`` images). Over any two epochs every image
    is seen both ways, where random flips leave a quarter of them unmirrored twice (the CIFAR-10
    speedruns' "alternating flip")."""
    flip = image_bits(raw) ^ bool(epoch % 2)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def shift_alternating_flip(x: Tensor, raw: Tensor, epoch: int) -> Tensor:
    """Translation by up to 2 pixels (reflect padding) and :func:`alternating_flip`, as the speedruns."""
    return alternating_flip(random_translate(x, pad=2), raw, epoch)


def shift_flip(x: Tensor) -> Tensor:
    """Translation by up to 2 pixels (reflect padding) and random flips: ``shift_alt_flip`` without the
    alternation, the ablation that tells what the alternation buys."""
    return random_flip(random_translate(x, pad=2))


# Each takes the float batch, the uint8 batch it came from, and the epoch; most use only the first.
Augmentation = Callable[[Tensor, Tensor, int], Tensor]


def _per_batch(fn: Callable[[Tensor], Tensor]) -> Augmentation:
    def apply(x: Tensor, raw: Tensor, epoch: int) -> Tensor:
        return fn(x)

    apply.__doc__ = fn.__doc__
    return apply


AUGMENTATIONS: dict[str, Augmentation] = {
    "none": _per_batch(identity),
    "crop_flip": _per_batch(crop_flip),
    "seed": _per_batch(random_affine),
    "shift_flip": _per_batch(shift_flip),
    "shift_alt_flip": shift_alternating_flip,
}


def get_augmentation(name: str) -> Augmentation:
    if name not in AUGMENTATIONS:
        raise LightningCifarError(f"augment={name!r}: allowed values are {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]
