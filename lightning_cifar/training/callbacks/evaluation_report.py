"""After ``test``: confusion matrix, per-class accuracy, the most confident mistakes and calibration.

Logged to TensorBoard (images and scalars) and written as PNG and CSV files to
``<run>/test_report/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torchmetrics.functional.classification import multiclass_calibration_error, multiclass_confusion_matrix

from lightning_cifar.errors import LightningCifarError, is_whole_number
from lightning_cifar.files import atomic_write_bytes, atomic_write_csv


@dataclass
class CalibrationBins:
    counts: Tensor  # images per confidence bin
    confidence: Tensor  # mean top-1 probability per bin (0 where empty)
    accuracy: Tensor  # fraction correct per bin (0 where empty)


def calibration_bins(probs: Tensor, targets: Tensor, n_bins: int = 15) -> CalibrationBins:
    """Top-1 confidence in ``n_bins`` equal-width bins over (0, 1], as torchmetrics bins it."""
    confidence, preds = probs.max(dim=1)
    correct = (preds == targets).float()
    index = (torch.bucketize(confidence, torch.linspace(0, 1, n_bins + 1)[1:-1], right=True)).clamp(0, n_bins - 1)
    counts = torch.bincount(index, minlength=n_bins).float()
    safe = counts.clamp(min=1)
    return CalibrationBins(
        counts,
        torch.bincount(index, weights=confidence, minlength=n_bins) / safe,
        torch.bincount(index, weights=correct, minlength=n_bins) / safe,
    )


@dataclass
class ScoredImages:
    probs: Tensor  # (N, C), in dataset order
    targets: Tensor  # (N,)
    classes: list[str]
    images: Optional[Tensor] = None  # (N, 3, 32, 32) uint8, for the mistakes grid

    @property
    def preds(self) -> Tensor:
        return self.probs.argmax(dim=1)

    def confusion(self) -> Tensor:
        return multiclass_confusion_matrix(self.preds, self.targets, num_classes=len(self.classes))

    def per_class_accuracy(self) -> Tensor:
        cm = self.confusion().float()
        return cm.diag() / cm.sum(dim=1).clamp(min=1)

    def ece(self, n_bins: int = 15) -> float:
        return float(multiclass_calibration_error(self.probs, self.targets, num_classes=len(self.classes),
                                                  n_bins=n_bins, norm="l1"))

    def confident_mistakes(self, k: int) -> Tensor:
        """Indices of up to ``k`` wrong predictions, most confident first."""
        confidence, preds = self.probs.max(dim=1)
        wrong = (preds != self.targets).nonzero().flatten()
        return wrong[confidence[wrong].argsort(descending=True)[:k]]


# -- figures --------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.figure(figsize=(width, height), dpi=110)


def confusion_figure(results: ScoredImages) -> Any:
    cm = results.confusion()
    rows = cm.float() / cm.sum(dim=1, keepdim=True).clamp(min=1)
    n = len(results.classes)
    fig = _figure(7.5, 6.5)
    ax = fig.add_subplot()
    shown = ax.imshow(rows.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(n), results.classes, rotation=45, ha="right")
    ax.set_yticks(range(n), results.classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(n):
        for j in range(n):
            colour = "white" if rows[i, j] > 0.5 else "black"
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7, color=colour)
    ax.set_title(f"Confusion matrix: {int(cm.diag().sum())} of {int(cm.sum())} correct (counts; colour: row share)")
    fig.tight_layout()
    return fig


def per_class_figure(results: ScoredImages) -> Any:
    acc = results.per_class_accuracy()
    overall = float((results.preds == results.targets).float().mean())
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot()
    bars = ax.bar(results.classes, acc.numpy() * 100, color="#4878a8")
    ax.axhline(overall * 100, color="#c44e52", linestyle="--", label=f"all classes: {overall:.1%}")
    ax.bar_label(bars, labels=[f"{a:.1%}" for a in acc.tolist()], fontsize=8, padding=2)
    ax.set_ylim(0, 105)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy per class")
    ax.tick_params(axis="x", labelrotation=45)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def mistakes_figure(results: ScoredImages, k: int) -> Optional[Any]:
    if results.images is None:
        return None
    picked = results.confident_mistakes(k).tolist()
    if not picked:
        return None
    cols = min(8, len(picked))
    rows = (len(picked) + cols - 1) // cols
    fig = _figure(1.5 * cols, 1.75 * rows + 0.4)
    for n, i in enumerate(picked):
        ax = fig.add_subplot(rows, cols, n + 1)
        ax.imshow(results.images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
        pred = int(results.preds[i])
        ax.set_title(f"#{i} true {results.classes[int(results.targets[i])]}\npred {results.classes[pred]}"
                     f" {float(results.probs[i, pred]):.0%}", fontsize=7)
        ax.axis("off")
    fig.suptitle("Most confident mistakes (test image #, true class, predicted class and its probability)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def reliability_figure(results: ScoredImages, n_bins: int) -> Any:
    bins = calibration_bins(results.probs, results.targets, n_bins)
    centres = (torch.arange(n_bins) + 0.5) / n_bins
    used = bins.counts > 0
    fig = _figure(5.5, 5.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    ax.bar(centres[used].numpy(), bins.accuracy[used].numpy(), width=1 / n_bins, edgecolor="black",
           color="#4878a8", alpha=0.8, label="accuracy in bin")
    ax.plot(bins.confidence[used].numpy(), bins.accuracy[used].numpy(), "o", color="#c44e52", markersize=4,
            label="(mean confidence, accuracy)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram: ECE {results.ece(n_bins):.4f} ({n_bins} bins)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def _png(fig: Any) -> bytes:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


# -- the callback --------------------------------------------------------------------------


class ClassificationReport(pl.Callback):
    """Collects the test set's predictions and, after ``test``, logs and writes the report."""

    def __init__(self, enabled: bool = True, mistakes: int = 24, calibration_bins: int = 15) -> None:
        """
        Args:
            enabled: produce the report after ``test``.
            mistakes: how many of the most confidently wrong test images to show.
            calibration_bins: confidence bins for the expected calibration error and reliability diagram.
        """
        # Checked here, when the command line is parsed, not after the whole test set has run.
        if not is_whole_number(mistakes):
            raise LightningCifarError(f"report.mistakes={mistakes!r}: must be 0 or a positive number of images")
        if not is_whole_number(calibration_bins, at_least=1):
            raise LightningCifarError(
                f"report.calibration_bins={calibration_bins!r}: must be a positive number of bins")
        self.enabled, self.mistakes, self.bins = enabled, mistakes, calibration_bins
        self._probs: list[Tensor] = []
        self._targets: list[Tensor] = []

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._probs, self._targets = [], []

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self.enabled or not isinstance(outputs, Tensor):
            return
        # Kept on the device until the end: a copy to the host per batch would be a sync per batch.
        self._probs.append(outputs.detach().float().softmax(dim=1))
        self._targets.append(batch[1].detach())

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or not self._probs:
            return
        if trainer.world_size > 1:
            rank_zero_warn("test report skipped: each process saw only its share of the test set; test on one device")
            return
        results = self._results(trainer)
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "test_report"
        step = trainer.global_step
        # Numbers and tables first: a figure that fails cannot lose them.
        acc, ece = results.per_class_accuracy(), results.ece(self.bins)
        metrics = {"test/ece": ece, **{f"test/acc_class/{c}": float(a) for c, a in zip(results.classes, acc)}}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        cm = results.confusion()
        atomic_write_csv(folder / "per_class.csv", [["class", "images", "correct", "accuracy"]] + [
            [c, int(cm[i].sum()), int(cm[i, i]), f"{float(acc[i]):.4f}"] for i, c in enumerate(results.classes)])
        atomic_write_csv(folder / "confusion_matrix.csv",
                         [["true \\ predicted", *results.classes]] +
                         [[c, *map(int, cm[i].tolist())] for i, c in enumerate(results.classes)])
        import matplotlib

        # Class names come from the data files: "$" in one must stay a dollar sign, not start TeX math.
        with matplotlib.rc_context({"text.parse_math": False}):
            figures = {
                "confusion_matrix": confusion_figure(results),
                "per_class_accuracy": per_class_figure(results),
                "reliability_diagram": reliability_figure(results, self.bins),
                "confident_mistakes": mistakes_figure(results, self.mistakes),
            }
            tensorboard = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
            for name, fig in figures.items():
                if fig is None:
                    continue
                if tensorboard is not None:
                    tensorboard.experiment.add_figure(f"test/{name}", fig, global_step=step, close=False)
                atomic_write_bytes(folder / f"{name}.png", _png(fig))
        for logger in trainer.loggers:
            logger.save()
        table = "\n".join(f"  {c:<11} {float(a):7.2%}" for c, a in zip(results.classes, acc))
        rank_zero_info(f"per-class test accuracy:\n{table}\nexpected calibration error {ece:.4f}; report in {folder}")

    def _results(self, trainer: pl.Trainer) -> ScoredImages:
        probs, targets = torch.cat(self._probs).cpu(), torch.cat(self._targets).cpu()
        classes = list(getattr(trainer.datamodule, "classes", None) or [])
        if len(classes) != probs.shape[1]:
            classes = [str(i) for i in range(probs.shape[1])]
        test_set = getattr(trainer.datamodule, "test_set", None)
        images = getattr(test_set, "images", None)
        # The test loader is not shuffled, so row i is test image i.
        if images is not None and len(images) == len(probs) and torch.equal(test_set.labels.cpu(), targets):
            images = images.cpu()
        else:
            images = None
        return ScoredImages(probs, targets, classes, images)
