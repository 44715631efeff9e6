import json

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from lightning_cifar import Classifier
from lightning_cifar.errors import LightningCifarError
from lightning_cifar.tools.timing import EpochTestAccuracy, Throughput
from tests.helpers.runs import trainer


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
    steps = len(tiny_dm.train_dataloader())
    assert [r["train_images"] for r in records] == [steps * tiny_dm.batch_size, 2 * steps * tiny_dm.batch_size]
    assert records[0]["train_wall_s"] < records[1]["train_wall_s"]
    tested = t.test(model, tiny_dm, verbose=False)[0]["test/acc"]
    assert records[-1]["test_acc"] == pytest.approx(tested, abs=1e-5)


def test_epoch_test_accuracy_from_a_later_epoch_skips_the_earlier_tests(tmp_path, tiny_dm):
    out = tmp_path / "e.jsonl"
    trainer(tmp_path, [EpochTestAccuracy(output=str(out), from_epoch=3)], max_epochs=3, limit_val_batches=0).fit(Classifier("mlp_seed"), tiny_dm)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [3]


def test_epoch_test_accuracy_refuses_epoch_zero():
    with pytest.raises(LightningCifarError, match="from_epoch=0"):
        EpochTestAccuracy(from_epoch=0)


def test_flip_tta_makes_predictions_mirror_invariant():
    model = Classifier("cnn_base", tta=True).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.predict_logits(x), model.predict_logits(x.flip(3)), atol=1e-5)
        plain = Classifier("cnn_base", tta=False).eval()
        assert not torch.allclose(plain.predict_logits(x), plain.predict_logits(x.flip(3)), atol=1e-5)


def test_mirror_shift_tta_averages_the_six_views_the_speedruns_use():
    """Half the mirror average of the image, half that of the image moved one pixel up-left and one
    down-right with reflected borders (airbench's tta_level=2), computed here view by view."""
    import torch.nn.functional as F

    model = Classifier("cnn_base", tta="mirror_shift").eval()
    x = torch.randn(3, 3, 32, 32)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    with torch.no_grad():
        net = lambda v: model(v)  # noqa: E731
        mirror = lambda v: (net(v) + net(v.flip(3))) / 2  # noqa: E731
        up_left, down_right = padded[..., 0:32, 0:32], padded[..., 2:34, 2:34]
        expected = 0.5 * mirror(x) + 0.25 * mirror(up_left) + 0.25 * mirror(down_right)
        assert torch.allclose(model.predict_logits(x), expected, atol=1e-5)
    assert torch.equal(up_left[..., 1:, 1:], x[..., :31, :31])  # moved by one pixel, as named


@pytest.mark.parametrize("value, mode", [(False, "none"), (True, "mirror"), ("mirror_shift", "mirror_shift")])
def test_tta_takes_the_old_booleans_and_the_named_choices(value, mode):
    from lightning_cifar.training.classifier import tta_mode

    assert tta_mode(Classifier("cnn_base", tta=value).hparams.tta) == mode


def test_an_unknown_tta_is_one_line(tmp_path, cli):
    from tests.helpers.runs import one_line_error

    result = cli(["fit", "--model.tta=shift", "--data.download=false", f"--data.data_dir={tmp_path}"], tmp_path,
                 check=False)
    assert "tta='shift': allowed values are 'none', 'mirror', 'mirror_shift' (or true/false)" in one_line_error(result)


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
