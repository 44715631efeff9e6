import pytest
import pytorch_lightning as pl
import torch

from lightning_cifar import CIFAR10DataModule, Classifier
from lightning_cifar.errors import LightningCifarError
from lightning_cifar.schedules import lr_multiplier


@pytest.mark.parametrize("name", ["onecycle", "cosine"])
@pytest.mark.parametrize("total", [1, 2, 3, 4, 100])
def test_schedules_hold_for_any_run_length(name, total):
    f = lr_multiplier(name, total, warmup=0.2)
    values = [f(step) for step in range(total)]
    assert all(0.0 < v <= 1.0 for v in values)
    assert max(values) == 1.0


def test_onecycle_warms_up_then_decays_linearly():
    f = lr_multiplier("onecycle", 100, warmup=0.2)
    values = [f(s) for s in range(100)]
    peak = values.index(1.0)
    assert peak == 20
    assert values[:peak] == sorted(values[:peak]) and values[peak:] == sorted(values[peak:], reverse=True)
    assert values[0] < 0.1 and values[-1] < 0.02
    assert values[60] == pytest.approx(0.5)


def trainer(tmp_path, **kwargs):
    return pl.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, **kwargs,
    )


@pytest.fixture
def tiny_dm(tiny_cifar):
    return CIFAR10DataModule(tiny_cifar, verify=False, download=False, val_split=40, batch_size=32)


@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("scheduler", ["onecycle", "cosine", "none"])
def test_a_few_steps_train_with_every_schedule(tmp_path, tiny_dm, steps, scheduler):
    model = Classifier("mlp_seed", scheduler=scheduler)
    t = trainer(tmp_path, max_steps=steps, limit_val_batches=0)
    t.fit(model, tiny_dm)
    assert t.global_step == steps


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_optimizers(optimizer):
    model = Classifier("mlp_seed", optimizer=optimizer, scheduler="none", lr=0.01)
    opt = model.configure_optimizers()
    assert type(opt).__name__.lower() == optimizer
    assert opt.param_groups[0]["lr"] == 0.01


def test_bf16_mixed_precision_trains_on_cpu(tmp_path, tiny_dm):
    model = Classifier("cnn_base")
    t = trainer(tmp_path, max_epochs=1, precision="bf16-mixed", limit_val_batches=1)
    t.fit(model, tiny_dm)
    assert torch.isfinite(t.callback_metrics["train/loss_epoch"])
    assert 0.0 <= float(t.callback_metrics["val/acc"]) <= 1.0


def test_load_from_checkpoint_rebuilds_the_backbone_from_name_and_kwargs(tmp_path, tiny_dm):
    model = Classifier("convpool", backbone_kwargs={"widths": [8, 16], "kernels": [5, 3]}, lr=0.02)
    t = trainer(tmp_path, max_steps=2, limit_val_batches=0)
    t.fit(model, tiny_dm)
    path = tmp_path / "model.ckpt"
    t.save_checkpoint(path)
    loaded = Classifier.load_from_checkpoint(path)
    assert loaded.hparams.backbone_kwargs == {"widths": [8, 16], "kernels": [5, 3]}
    assert loaded.hparams.lr == 0.02
    x = torch.randn(4, 3, 32, 32)
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # Only init arguments are stored, so LightningCLI can feed them back into __init__.
    assert set(torch.load(path, weights_only=True)["hyper_parameters"]) <= set(
        Classifier.__init__.__code__.co_varnames
    )


@pytest.mark.parametrize("kwargs, message", [({"lr": 0}, "lr=0"), ({"warmup": 1.5}, "warmup=1.5"),
                                             ({"label_smoothing": -0.1}, "label_smoothing=-0.1")])
def test_bad_training_settings_are_named(kwargs, message):
    with pytest.raises(LightningCifarError, match=message):
        Classifier("mlp_seed", **kwargs)


def test_unbounded_run_with_a_schedule_is_refused(tmp_path, tiny_dm):
    t = trainer(tmp_path, max_epochs=-1, limit_val_batches=0)
    with pytest.raises(LightningCifarError, match="needs a finite run"):
        t.fit(Classifier("mlp_seed"), tiny_dm)


def test_cli_without_checkpointing_drops_its_checkpoint_callback(tiny_cifar, tmp_path):
    from lightning_cifar.cli import CifarCLI

    args = [f"--data.data_dir={tiny_cifar}", "--data.verify=false", "--trainer.enable_checkpointing=false",
            f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false"]
    cli = CifarCLI(Classifier, CIFAR10DataModule, args=args, run=False)
    assert cli.trainer.checkpoint_callback is None
    cli = CifarCLI(Classifier, CIFAR10DataModule, args=args[:2] + args[3:], run=False)
    assert cli.trainer.checkpoint_callback.monitor == "val/acc"
