import math

import pytest
import torch
import torch.nn.functional as F

from lightning_cifar.data.augment import AUGMENTATIONS, crop_flip, get_augmentation, random_affine
from lightning_cifar.errors import LightningCifarError

N = 4000


def coordinate_images(n=N):
    """Channel 0 holds each pixel's row, channel 1 its column: augmentations become readable."""
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    return torch.stack([rows, cols, torch.zeros(32, 32)]).expand(n, 3, 32, 32).contiguous()


def test_none_is_the_identity():
    x = torch.rand(8, 3, 32, 32)
    assert torch.equal(AUGMENTATIONS["none"](x, (x * 255).to(torch.uint8), 0), x)


def test_unknown_preset_names_the_allowed_ones():
    with pytest.raises(LightningCifarError, match="allowed values are none, crop_flip, seed, shift_flip, shift_alt_flip"):
        get_augmentation("mixup")


def test_crop_flip_shifts_stay_within_4_pixels_and_are_uniform():
    torch.manual_seed(0)
    out = crop_flip(coordinate_images())
    flipped = out[:, 1, 16, 17] < out[:, 1, 16, 16]
    centre_col = torch.where(flipped, out[:, 1, 16, 15], out[:, 1, 16, 16])
    dy = out[:, 0, 16, 16] - 16
    dx = centre_col - 16
    for shift in (dy, dx):
        assert shift.min() == -4 and shift.max() == 4
        counts = torch.bincount((shift + 4).long(), minlength=9).float() / N
        assert counts.min() > 0.08 and counts.max() < 0.15  # 1/9 = 0.111 each
    assert abs(flipped.float().mean().item() - 0.5) < 0.04
    # Flip and shift are drawn independently for each image.
    assert abs(flipped[dx > 0].float().mean().item() - 0.5) < 0.06


def test_crop_flip_output_is_exactly_a_reflect_padded_crop_of_each_image():
    torch.manual_seed(1)
    x = torch.rand(64, 3, 32, 32)
    coords = coordinate_images(64)
    out = crop_flip(torch.cat([x, coords], dim=1))  # same random draw for image and coordinates
    img, where = out[:, :3], out[:, 3:]
    for i in range(64):
        flipped = bool(where[i, 1, 16, 17] < where[i, 1, 16, 16])
        unflipped = where[i].flip(2) if flipped else where[i]
        dy, dx = int(unflipped[0, 16, 16]) - 16, int(unflipped[1, 16, 16]) - 16
        padded = F.pad(x[i : i + 1], (4, 4, 4, 4), mode="reflect")[0]
        expected = padded[:, 4 + dy : 36 + dy, 4 + dx : 36 + dx]
        if flipped:
            expected = expected.flip(2)
        assert torch.equal(img[i], expected)


def test_seed_augmentation_matches_keras_ranges():
    torch.manual_seed(2)
    out = random_affine(coordinate_images())
    rows, cols = out[:, 0], out[:, 1]
    # Local derivatives of the source coordinates at the centre give the affine map per image.
    d_col_dx = (cols[:, 16, 17] - cols[:, 16, 15]) / 2
    d_row_dx = (rows[:, 16, 17] - rows[:, 16, 15]) / 2
    flipped = d_col_dx < 0
    angle = torch.rad2deg(torch.atan2(d_row_dx, d_col_dx.abs()))
    scale = torch.hypot(d_row_dx, d_col_dx)
    assert angle.abs().max() <= 10.5 and angle.abs().max() > 9.0
    assert 0.78 <= scale.min() and scale.max() <= 1.22
    assert scale.min() < 0.85 and scale.max() > 1.15
    assert abs(flipped.float().mean().item() - 0.5) < 0.04
    # The centre moves by the shift (up to 10 % of 32 px), plus sub-pixel effects of zoom/rotation.
    shift = out[:, 0, 16, 16] - 16
    assert shift.abs().max() < 3.2 + 1.0
    assert 1.4 < shift.std().item() < 2.3  # uniform on [-3.2, 3.2] has std 1.85
    # Nearest fill: no value outside the original coordinate range appears.
    assert rows.min() >= 0 and rows.max() <= 31


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_augmentations_keep_shape_dtype_and_device(name):
    x = torch.rand(5, 3, 32, 32)
    out = AUGMENTATIONS[name](x, (x * 255).to(torch.uint8), 3)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert math.isfinite(out.sum().item())


def test_alternating_flip_shows_every_image_both_ways_over_two_epochs():
    from lightning_cifar.data.augment import alternating_flip, image_bits

    torch.manual_seed(0)
    raw = torch.randint(0, 256, (1000, 3, 32, 32), dtype=torch.uint8)
    x = raw.float() / 255
    flipped = [(alternating_flip(x, raw, epoch) != x).flatten(1).any(1) for epoch in range(4)]
    assert torch.equal(flipped[0], ~flipped[1]) and torch.equal(flipped[0], flipped[2])  # alternates
    assert 400 < int(flipped[0].sum()) < 600  # half start mirrored
    # The bit belongs to the image, not to its place in the batch.
    order = torch.randperm(1000)
    assert torch.equal(image_bits(raw[order]), image_bits(raw)[order])
    assert torch.equal(alternating_flip(x[order], raw[order], 1), alternating_flip(x, raw, 1)[order])


def test_shift_alt_flip_moves_by_at_most_2_pixels():
    from lightning_cifar.data.augment import shift_alternating_flip

    torch.manual_seed(0)
    x = coordinate_images(2000)
    raw = torch.zeros(2000, 3, 32, 32, dtype=torch.uint8)  # every bit 0: no image mirrored in epoch 0
    out = shift_alternating_flip(x, raw, 0)
    dy, dx = out[:, 0, 10, 10] - 10, out[:, 1, 10, 10] - 10
    assert set(dy.unique().tolist()) == set(dx.unique().tolist()) == {-2.0, -1.0, 0.0, 1.0, 2.0}
    mirrored = shift_alternating_flip(x, raw, 1)  # epoch 1: all mirrored
    assert (mirrored[:, 1, 10, 10] - (31 - 10)).abs().max() <= 2


def test_shift_flip_moves_by_at_most_2_pixels_and_mirrors_at_random():
    from lightning_cifar.data.augment import get_augmentation

    torch.manual_seed(0)
    x = coordinate_images(2000)
    out = get_augmentation("shift_flip")(x, torch.zeros(2000, 3, 32, 32, dtype=torch.uint8), 0)
    dy, col = out[:, 0, 10, 10] - 10, out[:, 1, 10, 10]
    assert set(dy.unique().tolist()) == {-2.0, -1.0, 0.0, 1.0, 2.0}
    mirrored = (col - (31 - 10)).abs() <= 2
    assert ((col - 10).abs() <= 2).logical_or(mirrored).all()
    assert 800 < int(mirrored.sum()) < 1200  # about half, although every image has the same bit

