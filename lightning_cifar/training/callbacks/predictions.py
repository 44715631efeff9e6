"""``lightning predict``'s output: a CSV file of predictions in the run's log folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities import rank_zero_info

from lightning_cifar.files import atomic_write_csv, ensure_writable


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

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Before predicting: a folder that cannot be written failed only after every image was predicted.
        ensure_writable(self._path(trainer).parent, 2**20, "--predictions.output_dir=DIR")

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Sequence[Any], batch_indices: Any
    ) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        if not batches:
            return
        probs = torch.cat([b["probs"] for b in batches]).cpu()
        targets = torch.cat([b["targets"] for b in batches]).cpu() if "targets" in batches[0] else None
        classes = _class_names(trainer, probs.shape[1])
        files = list(getattr(trainer.datamodule, "predict_files", None) or [])
        if files and len(files) == len(probs) and trainer.world_size == 1:
            skipped = list(getattr(trainer.datamodule, "predict_skipped", None) or [])
            self._write_folder_predictions(trainer, files, probs, classes, skipped)
            return
        conf, pred = probs.max(dim=1)
        header = ["index", "pred", "pred_class", "prob"] + (["target", "target_class"] if targets is not None else [])
        rows: list[list[Any]] = [header]
        for i in range(len(pred)):
            row = [i, int(pred[i]), classes[int(pred[i])], f"{float(conf[i]):.6f}"]
            if targets is not None:
                row += [int(targets[i]), classes[int(targets[i])]]
            rows.append(row)
        path = self._path(trainer)
        atomic_write_csv(path, rows)
        line = f"wrote {len(pred)} predictions to {path}"
        if targets is not None:
            line += f" (accuracy {float((pred == targets).float().mean()):.4f})"
        rank_zero_info(line)


    def _path(self, trainer: pl.Trainer) -> Path:
        folder = Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)
        if trainer.world_size > 1:
            folder = folder / f"rank{trainer.global_rank}"
        return folder / self.filename

    def _write_folder_predictions(self, trainer: pl.Trainer, files: list[str], probs: torch.Tensor,
                                  classes: list[str], skipped: list[tuple[str, str]]) -> None:
        """One row per image file: top-1 class and probability, the top 3; unreadable files with the reason."""
        top_p, top_i = probs.topk(min(3, probs.shape[1]), dim=1)
        rows: list[list[Any]] = [["file", "pred_class", "prob", "top3", "error"]]
        for name, p, i in zip(files, top_p.tolist(), top_i.tolist()):
            top3 = "; ".join(f"{classes[c]} {q:.3f}" for c, q in zip(i, p))
            rows.append([name, classes[i[0]], f"{p[0]:.6f}", top3, ""])
        rows += [[name, "", "", "", why] for name, why in skipped]
        path = self._path(trainer)
        atomic_write_csv(path, rows)
        shown = rows[1:21]
        width = max(len(r[0]) for r in shown)
        lines = [f"{'file':<{width}}  {'class':<10}  {'prob':>5}  top 3"]
        lines += [f"{r[0]:<{width}}  {r[1]:<10}  {float(r[2]):5.3f}  {r[3]}" for r in shown if not r[4]]
        if len(files) > 20:
            lines.append(f"... and {len(files) - 20} more")
        lines += [f"skipped {name}: {why}" for name, why in skipped]
        lines.append(f"wrote {len(files)} predictions ({len(skipped)} files skipped) to {path}")
        rank_zero_info("\n" + "\n".join(lines))  # the progress bar has not ended its line yet


def _class_names(trainer: pl.Trainer, n: int) -> list[str]:
    classes = list(getattr(trainer.datamodule, "classes", None) or [])
    return classes if len(classes) == n else [str(i) for i in range(n)]
