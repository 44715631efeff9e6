from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.helpers.cifar_files import CLASSES, TRAIN_FILES, read_batch, write_tiny_cifar
from lightning_cifar import CIFAR10DataModule
from lightning_cifar.errors import DataError


def module(root, **kwargs):
    return CIFAR10DataModule(root, **{"verify": False, "download": False, "val_split": 40, "batch_size": 32, **kwargs})


def all_training_images(root):
    batches = [read_batch(root, name) for name in TRAIN_FILES]
    data = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
    labels = sum((b["labels"] for b in batches), [])
    return torch.from_numpy(data), torch.tensor(labels)


def test_loads_the_official_format_as_uint8_nchw_with_class_names(tiny_cifar):
    dm = module(tiny_cifar)
    dm.setup("fit")
    dm.setup("test")
    assert dm.classes == CLASSES
    assert dm.train_set.images.dtype == torch.uint8
    assert dm.train_set.images.shape == (160, 3, 32, 32) and len(dm.val_set) == 40
    test = read_batch(tiny_cifar, "test_batch")
    assert torch.equal(dm.test_set.images, torch.from_numpy(test["data"]).reshape(-1, 3, 32, 32))
    assert dm.test_set.labels.tolist() == test["labels"]


def test_validation_split_is_seeded_disjoint_and_complete(tiny_cifar):
    images, labels = all_training_images(tiny_cifar)
    splits = []
    for seed in (7, 7, 8):
        dm = module(tiny_cifar, seed=seed)
        dm.setup("fit")
        splits.append(dm)
    a, b, c = splits
    assert torch.equal(a.val_set.images, b.val_set.images)
    assert not torch.equal(a.val_set.images, c.val_set.images)
    together = torch.cat([a.train_set.images, a.val_set.images]).flatten(1)
    # Every training image is in exactly one of the two parts.
    assert sorted(map(bytes, together.numpy())) == sorted(map(bytes, images.flatten(1).numpy()))
    pairs = {bytes(i.numpy()): int(l) for i, l in zip(images.flatten(1), labels)}
    assert all(pairs[bytes(i.numpy())] == int(l) for i, l in zip(a.val_set.images.flatten(1), a.val_set.labels))


def test_val_split_as_a_fraction(tiny_cifar):
    dm = module(tiny_cifar, val_split=0.25)
    dm.setup("fit")
    assert len(dm.val_set) == 50 and len(dm.train_set) == 150


@pytest.mark.parametrize("val_split", [200, 10_000, -3, 1.5])
def test_impossible_val_split_is_rejected(tiny_cifar, val_split):
    with pytest.raises(DataError, match=f"val_split={val_split}"):
        module(tiny_cifar, val_split=val_split).setup("fit")


def test_batches_come_whole_and_shuffled(tiny_cifar):
    dm = module(tiny_cifar)
    dm.setup("fit")
    first = [y for _, y in dm.train_dataloader()]
    second = [y for _, y in dm.train_dataloader()]
    assert [len(y) for y in first] == [32] * 5
    assert not all(torch.equal(a, b) for a, b in zip(first, second))
    val = list(dm.val_dataloader())
    assert torch.equal(torch.cat([y for _, y in val]), dm.val_set.labels)


def test_training_batches_are_augmented_and_evaluation_batches_never(tiny_cifar):
    dm = module(tiny_cifar, augment="crop_flip")
    dm.setup("fit")
    x, y = next(iter(dm.val_dataloader()))
    plain = x.float() / 255  # the model's input: [0, 1] images (the model standardises them)
    dm.trainer = SimpleNamespace(training=False, current_epoch=0)
    out, labels = dm.on_after_batch_transfer((x, y), 0)
    assert torch.equal(out, plain) and torch.equal(labels, y)
    dm.trainer = SimpleNamespace(training=True, current_epoch=0)
    torch.manual_seed(0)
    augmented, _ = dm.on_after_batch_transfer((x, y), 0)
    assert augmented.shape == plain.shape and not torch.allclose(augmented, plain)


def test_augmented_batches_stay_in_the_unit_range(tiny_cifar):
    dm = module(tiny_cifar, augment="seed")
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    dm.trainer = SimpleNamespace(training=True, current_epoch=0)
    out, _ = dm.on_after_batch_transfer((x, y), 0)
    assert out.dtype == torch.float32 and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_the_alternating_flip_follows_the_trainers_epoch(tiny_cifar):
    from lightning_cifar.data.augment import image_bits, random_translate

    dm = module(tiny_cifar, augment="shift_alt_flip")
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    seen = []
    for epoch in (0, 1):
        dm.trainer = SimpleNamespace(training=True, current_epoch=epoch)
        torch.manual_seed(0)  # the same shifts in both epochs: only the flip may differ
        seen.append(dm.on_after_batch_transfer((x, y), 0)[0])
    torch.manual_seed(0)
    shifted = random_translate(x.float() / 255, pad=2)  # the same draw, without the flip
    mirrored_first = (seen[0] != shifted).flatten(1).any(1)
    # Mirrored in epoch 0 exactly the images whose bit is set, in epoch 1 exactly the others.
    assert torch.equal(mirrored_first, image_bits(x)) and 0 < int(mirrored_first.sum()) < len(x)
    assert torch.equal(seen[0], seen[1].flip(3))


def test_verification_is_on_by_default_and_names_the_failing_file(tiny_cifar):
    with pytest.raises(DataError, match=r"data_batch_1 fails torchvision's MD5 check.*--data.verify=false"):
        CIFAR10DataModule(tiny_cifar, download=False, val_split=40).setup("fit")


def test_missing_folder_and_missing_file_are_named(tmp_path):
    with pytest.raises(DataError, match=r"no CIFAR-10 at .*--data.data_dir"):
        module(tmp_path / "nowhere").setup("fit")
    root = write_tiny_cifar(tmp_path / "partial")
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"data_batch_3 is missing"):
        module(root).setup("fit")


@pytest.mark.parametrize("kwargs, message", [({"batch_size": 0}, "batch_size=0"), ({"augment": "mixup"}, "mixup")])
def test_bad_settings_are_rejected_at_construction(tiny_cifar, kwargs, message):
    with pytest.raises(Exception, match=message):
        module(tiny_cifar, **kwargs)


def test_failed_download_says_how_to_point_at_existing_files(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    def offline(self):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(CIFAR10, "download", offline)
    with pytest.raises(DataError, match=r"could not download CIFAR-10.*--data.data_dir"):
        CIFAR10DataModule(tmp_path / "data").prepare_data()
