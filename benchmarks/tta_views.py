"""Which test-time views to average: each view set scored on the held-out validation images, the test set beside it.

    python benchmarks/tta_views.py RUN1/checkpoints/last.ckpt RUN2/checkpoints/last.ckpt \\
        --data-dir ../shared/cifar10 --json benchmarks/speedrun/tta-views.json

A checkpoint trained with a validation split (``data.val_split`` > 0; ``speedrun_ablation.py --score val`` trains
so) is loaded once; the logits of every candidate view (the image shifted by up to 2 pixels, reflected at the
border, each shift also mirrored) are computed once per image, for the validation images the run held out (the
same split: its data module's ``val_split`` and ``seed``, read from the checkpoint) and for the test set. Each view
set in ``VIEW_SETS`` is then a weighted mean of those logits, so sets are compared on the very same forward passes.
The table leads with validation accuracy, the one to choose a set on; the test accuracy is reported, never chosen
on. The forward passes run in float32 (a run tested under bfloat16 autocast, on a CPU that has it natively, may
differ from its own numbers by a few images). Each set's cost is its number of forward passes per image: the
``tta`` setting of the chosen one is what a run pays in its test pass.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lightning_cifar.data.datamodule import CIFAR10DataModule
from lightning_cifar.training.classifier import Classifier

# A view: (rows down, columns right, mirrored). Shifts move the content; the border is reflected.
View = tuple[int, int, bool]
NEAR = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
FAR_DIAGONALS = [(-2, -2), (-2, 2), (2, -2), (2, 2)]
FAR_AXES = [(-2, 0), (2, 0), (0, -2), (0, 2)]
SHIFTS = NEAR + FAR_DIAGONALS + FAR_AXES
VIEWS: list[View] = [(dy, dx, m) for dy, dx in SHIFTS for m in (False, True)]


def mirrored(shifts: list[tuple[int, int]], weight: float) -> dict[View, float]:
    """Each shift and its mirror image, ``weight`` shared equally among them."""
    each = weight / (2 * len(shifts))
    return {(dy, dx, m): each for dy, dx in shifts for m in (False, True)}


def combine(*parts: dict[View, float]) -> dict[View, float]:
    out: dict[View, float] = {}
    for part in parts:
        for view, w in part.items():
            out[view] = out.get(view, 0.0) + w
    return out


DIAGONALS_1 = [(-1, -1), (-1, 1), (1, -1), (1, 1)]
AXES_1 = [(-1, 0), (1, 0), (0, -1), (0, 1)]
# The package's modes first (``evaluation_logits``: "mirror_shift" is half the mirrored image, half the mean of
# the mirrored image moved one pixel down-right and one up-left), then larger sets.
PACKAGE_MIRROR_SHIFT = "mirror_shift (the package's)"
VIEW_SETS: dict[str, dict[View, float]] = {
    "none": {(0, 0, False): 1.0},
    "mirror": mirrored([(0, 0)], 1.0),
    PACKAGE_MIRROR_SHIFT: combine(mirrored([(0, 0)], 0.5), mirrored([(1, 1), (-1, -1)], 0.5)),
    "4 diagonal shifts, half weight (10)": combine(mirrored([(0, 0)], 0.5), mirrored(DIAGONALS_1, 0.5)),
    "8 shifts by 1, half weight (18)": combine(mirrored([(0, 0)], 0.5), mirrored(DIAGONALS_1 + AXES_1, 0.5)),
    "3x3 grid, equal weights (18)": mirrored(NEAR, 1.0),
    "4 axis shifts, half weight (10)": combine(mirrored([(0, 0)], 0.5), mirrored(AXES_1, 0.5)),
    "8 shifts by 1 + 8 by 2, thirds (34)": combine(mirrored([(0, 0)], 1 / 3), mirrored(DIAGONALS_1 + AXES_1, 1 / 3),
                                                  mirrored(FAR_DIAGONALS + FAR_AXES, 1 / 3)),
}


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The images moved ``dy`` rows down and ``dx`` columns right, the border reflected (as the training shifts)."""
    if dy == dx == 0:
        return x
    p = max(abs(dy), abs(dx))
    h, w = x.shape[-2:]
    padded = F.pad(x, (p, p, p, p), mode="reflect")
    return padded[..., p - dy:p - dy + h, p - dx:p - dx + w]


@torch.no_grad()
def view_logits(model: Classifier, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """(views, images, classes) float32 logits of every view in ``VIEWS``."""
    out = torch.empty(len(VIEWS), len(images), 10)
    for start in range(0, len(images), batch):
        x = CIFAR10DataModule.to_float(images[start:start + batch])
        for v, (dy, dx, m) in enumerate(VIEWS):
            xv = shifted(x, dy, dx)
            out[v, start:start + len(x)] = model(xv.flip(3) if m else xv).float()
    return out


def accuracy(logits: torch.Tensor, labels: torch.Tensor, view_set: dict[View, float]) -> float:
    mean = sum(w * logits[VIEWS.index(view)] for view, w in view_set.items())
    return (mean.argmax(1) == labels).float().mean().item()


def score_checkpoint(path: str, data_dir: str) -> dict:
    model = Classifier.load_from_checkpoint(path, map_location="cpu", weights_only=True).eval()
    saved = torch.load(path, map_location="cpu", weights_only=True)
    data = saved.get("datamodule_hyper_parameters") or {}
    if not data.get("val_split"):
        raise SystemExit(f"{path}: trained on all training images (val_split 0): nothing held out to choose on")
    # The run's own data settings (the split's size and seed, whether the files were checked against the official
    # sums) at this machine's path: the same held-out images it validated on.
    settings = {k: v for k, v in data.items() if k in inspect.signature(CIFAR10DataModule).parameters}
    dm = CIFAR10DataModule(**{**settings, "data_dir": data_dir, "download": False, "predict_dir": None})
    dm.setup("fit")
    dm.setup("test")
    started = time.perf_counter()
    splits = {}
    for name, ds in (("val", dm.val_set), ("test", dm.test_set)):
        # Each view is a forward pass over the split (the 94 % network on 2 CPU cores: about 18 s per view of
        # the 10,000 test images), so this says how far it got.
        print(f"  {path}: {len(VIEWS)} views of the {len(ds)} {name} images ...", file=sys.stderr, flush=True)
        logits = view_logits(model, ds.images)
        splits[name] = {label: accuracy(logits, ds.labels, views) for label, views in VIEW_SETS.items()}
    seconds = time.perf_counter() - started
    images = len(dm.val_set) + len(dm.test_set)
    return {"checkpoint": path, "epoch": saved.get("epoch"), "val_images": len(dm.val_set),
            "s_per_view_per_10k_images": round(seconds / len(VIEWS) / images * 10_000, 2), **splits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--json", help="also write every accuracy to this file")
    args = parser.parse_args()
    missing = [p for p in args.checkpoints if not Path(p).is_file()]
    if missing:  # before the first checkpoint's half hour of forward passes, not after it
        raise SystemExit(f"no checkpoint file at {', '.join(missing)}")
    torch.set_grad_enabled(False)
    runs = []
    for path in args.checkpoints:
        runs.append(score_checkpoint(path, args.data_dir))
        print(f"{path}: epoch {runs[-1]['epoch']}, {runs[-1]['val_images']} validation images,"
              f" {runs[-1]['s_per_view_per_10k_images']} s per view per 10,000 images", flush=True)
    base = PACKAGE_MIRROR_SHIFT
    print(f"\n| view set | forward passes | validation (chosen on) | against {base.split(' ')[0]} | test | against |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, views in VIEW_SETS.items():
        cells = [label, str(len(views))]
        for split in ("val", "test"):
            accs = [r[split][label] for r in runs]
            diffs = [r[split][label] - r[split][base] for r in runs]
            cells.append(f"{100 * statistics.mean(accs):.2f} % ({', '.join(f'{100 * a:.2f}' for a in accs)})")
            cells.append(f"{100 * statistics.mean(diffs):+.2f} ({', '.join(f'{100 * d:+.2f}' for d in diffs)})")
        print("| " + " | ".join(cells) + " |")
    if args.json:
        sets = {label: {str(view): w for view, w in views.items()} for label, views in VIEW_SETS.items()}
        Path(args.json).write_text(json.dumps({"command": sys.argv, "view_sets": sets, "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
