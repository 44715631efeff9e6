"""Callbacks the command line always adds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities import rank_zero_info

from lightning_cifar.files import atomic_write_csv


class PredictionsCSV(BasePredictionWriter):
    """Writes ``lightning predict`` results to ``predictions.csv`` in the run's log folder."""

    def __init__(self, filename: str = "predictions.csv", output_dir: Optional[str] = None) -> None:
        """
        Args:
            filename: name of the CSV file.
            output_dir: folder for the file; by default the run's log folder.
        """
        super().__init__(write_interval="epoch")
        self.filename, self.output_dir = filename, output_dir

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Sequence[Any], batch_indices: Any
    ) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        if not batches:
            return
        probs = torch.cat([b["probs"] for b in batches]).cpu()
        targets = torch.cat([b["targets"] for b in batches]).cpu() if "targets" in batches[0] else None
        classes = _class_names(trainer, probs.shape[1])
        conf, pred = probs.max(dim=1)
        header = ["index", "pred", "pred_class", "prob"] + (["target", "target_class"] if targets is not None else [])
        rows: list[list[Any]] = [header]
        for i in range(len(pred)):
            row = [i, int(pred[i]), classes[int(pred[i])], f"{float(conf[i]):.6f}"]
            if targets is not None:
                row += [int(targets[i]), classes[int(targets[i])]]
            rows.append(row)
        folder = Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)
        if trainer.world_size > 1:
            folder = folder / f"rank{trainer.global_rank}"
        path = folder / self.filename
        atomic_write_csv(path, rows)
        line = f"wrote {len(pred)} predictions to {path}"
        if targets is not None:
            line += f" (accuracy {float((pred == targets).float().mean()):.4f})"
        rank_zero_info(line)


def _class_names(trainer: pl.Trainer, n: int) -> list[str]:
    classes = list(getattr(trainer.datamodule, "classes", None) or [])
    return classes if len(classes) == n else [str(i) for i in range(n)]
