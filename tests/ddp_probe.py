"""A callback for the DDP test: each rank records which training images it was handed."""

import json
from pathlib import Path

import pytorch_lightning as pl


class ShardRecorder(pl.Callback):
    def __init__(self, output: str) -> None:
        self.output = output

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sampler = trainer.train_dataloader.sampler
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "sampler": type(sampler).__name__,
            "indices": [int(i) for i in sampler],
        }
        Path(self.output, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
