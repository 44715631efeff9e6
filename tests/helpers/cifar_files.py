"""Writes small datasets in the official CIFAR-10 python format, and fake plugin distributions."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import numpy as np

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]


def class_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 3072) uint8 rows, laid out like CIFAR (1024 R, 1024 G, 1024 B).

    Each class has its own colour and its own stripe direction, plus noise, so a
    small network can learn them in a few steps (and a broken pipeline cannot).
    """
    n = len(labels)
    yy, xx = np.mgrid[0:32, 0:32]
    images = np.empty((n, 3, 32, 32), dtype=np.float32)
    for i, label in enumerate(labels):
        colour = np.array([(label * 37) % 256, (label * 91 + 40) % 256, (label * 53 + 90) % 256], np.float32)
        stripes = 60.0 * np.sin((xx * np.cos(label) + yy * np.sin(label)) * 0.6)
        images[i] = colour[:, None, None] * 0.7 + stripes[None] + rng.normal(0, 12, (3, 32, 32))
    return np.clip(images, 0, 255).astype(np.uint8).reshape(n, 3072)


def write_tiny_cifar(root: Path, per_batch: int = 40, test_size: int = 60, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py`` with 5 x ``per_batch`` training and ``test_size`` test images."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, size, batch_label in [
        *[(f, per_batch, f"training batch {i} of 5") for i, f in enumerate(TRAIN_FILES, start=1)],
        ("test_batch", test_size, "testing batch 1 of 1"),
    ]:
        labels = np.arange(size) % 10
        rng.shuffle(labels)
        entry = {
            "batch_label": batch_label,
            "labels": [int(v) for v in labels],
            "data": class_images(labels, rng),
            "filenames": [f"{CLASSES[v]}_s_{i:06d}.png" for i, v in enumerate(labels)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"num_cases_per_batch": per_batch, "label_names": CLASSES, "num_vis": 3072}, f, protocol=2)
    return Path(root)


def read_batch(root: Path, name: str) -> dict:
    with open(Path(root) / "cifar-10-batches-py" / name, "rb") as f:
        return pickle.load(f, encoding="latin1")


def make_distribution(
    site: Path, dist_name: str, entry_points: dict[str, str], modules: dict[str, str], version: str = "0.1"
) -> Path:
    """An installed-looking distribution: ``*.dist-info`` metadata plus its modules, in ``site``."""
    site.mkdir(parents=True, exist_ok=True)
    info = site / f"{dist_name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[lightning_cifar.backbones]\n{lines}\n")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    return site
