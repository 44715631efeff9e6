import json

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from conftest import trainer
from lightning_cifar import Classifier
from lightning_cifar.timing import EpochTestAccuracy, Throughput


def test_throughput_counts_the_images_after_warm_up(tmp_path, tiny_dm):
    out = tmp_path / "t.jsonl"
    t = trainer(tmp_path, [Throughput(warmup_steps=2, output=str(out))], max_steps=6, limit_val_batches=0)
    t.fit(Classifier("mlp_seed"), tiny_dm)
    record = json.loads(out.read_text())
    assert record["images"] == 4 * 32 and record["backbone"] == "mlp_seed"
    assert record["images_per_s"] == pytest.approx(record["images"] / record["seconds"], rel=1e-2)


def test_epoch_test_accuracy_matches_a_real_test_run(tmp_path, tiny_dm):
    out = tmp_path / "e.jsonl"
    model = Classifier("cnn_base", tta=True)
    t = trainer(tmp_path, [EpochTestAccuracy(output=str(out))], max_epochs=2, limit_val_batches=1)
    t.fit(model, tiny_dm)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[0]["train_wall_s"] < records[1]["train_wall_s"]
    tested = t.test(model, tiny_dm, verbose=False)[0]["test/acc"]
    assert records[-1]["test_acc"] == pytest.approx(tested, abs=1e-5)


def test_flip_tta_makes_predictions_mirror_invariant():
    model = Classifier("cnn_base", tta=True).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.predict_logits(x), model.predict_logits(x.flip(3)), atol=1e-5)
        plain = Classifier("cnn_base", tta=False).eval()
        assert not torch.allclose(plain.predict_logits(x), plain.predict_logits(x.flip(3)), atol=1e-5)


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch):
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", lambda module: Broken())
    model = Classifier("mlp_seed", compile=True)
    with pytest.warns(UserWarning, match="torch.compile failed, continuing without it: .*no C\\+\\+ compiler"):
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert set(model.state_dict()) == set(Classifier("mlp_seed").state_dict())


def test_epoch_test_accuracy_leaves_the_training_run_unchanged(tmp_path, tiny_dm):
    weights = []
    for callbacks in ([], [EpochTestAccuracy()]):
        pl.seed_everything(5)
        model = Classifier("cnn_base")
        trainer(tmp_path, callbacks, max_epochs=2, limit_val_batches=1).fit(model, tiny_dm)
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
