"""Data-parallel training through Lightning's own DDP strategy, two CPU processes (gloo)."""

import json

import torch
from torchmetrics.classification import MulticlassAccuracy

from lightning_cifar import CIFAR10DataModule, Classifier
from tests.helpers.runs import PROBES_ENV, TINY_DATA_ARGS, run_cli, scalars


def test_ddp_on_two_cpu_processes_shards_data_syncs_metrics_and_checkpoints(tmp_path, tiny_cifar):
    shards = tmp_path / "shards"
    shards.mkdir()
    env = PROBES_ENV
    run_cli(["fit", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, "--trainer.max_epochs=1",
             "--trainer.strategy=ddp", "--trainer.accelerator=cpu", "--trainer.devices=2",
             "--trainer.precision=32-true", "--seed_everything=3",
             "--trainer.callbacks+=tests.helpers.probes.ShardRecorder", f"--trainer.callbacks.output={shards}"],
            tmp_path, env=env)

    ranks = [json.loads((shards / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 and r["sampler"] == "DistributedSampler" for r in ranks)
    first, second = (set(r["indices"]) for r in ranks)
    assert first.isdisjoint(second) and first | second == set(range(160))  # 200 images - 40 for validation

    run = tmp_path / "lightning_logs" / "version_0"
    logged = scalars(run)["val/acc"][-1]
    model = Classifier.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    dm = CIFAR10DataModule(tiny_cifar, verify=False, download=False, val_split=40)
    dm.setup("fit")
    acc = MulticlassAccuracy(10, average="micro")
    model.eval()
    with torch.no_grad():
        acc.update(model.predict_logits(dm.to_float(dm.val_set.images)), dm.val_set.labels)
    # The value both ranks logged (each saw half the validation set) is the whole set's accuracy.
    assert logged == float(acc.compute())
