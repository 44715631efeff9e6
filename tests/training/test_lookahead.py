"""Lookahead (airbench94's): the network is reset to slow weights every few steps, and keeps them at the end."""

from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from lightning_cifar.errors import LightningCifarError
from lightning_cifar.training.callbacks.lookahead import Lookahead
from tests.helpers.runs import SMALL_NET, TINY_DATA_ARGS

LOOKAHEAD = "lightning_cifar.training.callbacks.lookahead.Lookahead"


class _Net(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 2)
        self.norm = torch.nn.BatchNorm1d(2)


def _start(callback: Lookahead, net: _Net, total: float = 10) -> None:
    callback.on_fit_start(SimpleNamespace(estimated_stepping_batches=total), net)


def _step(callback: Lookahead, net: _Net, step: int) -> None:
    callback.on_train_batch_end(SimpleNamespace(global_step=step), net, None, None, 0)


def test_the_pull_rises_as_a_power_of_progress_to_decay():
    callback = Lookahead(every=5, decay=0.8, power=3)
    assert callback.pull(0, 100) == 0.0
    assert callback.pull(50, 100) == pytest.approx(0.8 * 0.5 ** 3)
    assert callback.pull(100, 100) == pytest.approx(0.8)


def test_every_kth_step_moves_the_slow_weights_toward_the_network_and_resets_the_network_to_them():
    torch.manual_seed(0)
    net, callback = _Net(), Lookahead(every=5, decay=0.8, power=1)
    _start(callback, net)
    start = net.layer.weight.detach().clone()
    with torch.no_grad():
        net.layer.weight.add_(1.0)
        net.norm.running_mean.add_(2.0)
    _step(callback, net, 3)  # not a multiple of 5: nothing happens
    assert torch.equal(net.layer.weight, start + 1.0)
    _step(callback, net, 5)  # pull 0.4: the slow weights move 0.6 of the way
    assert torch.allclose(net.layer.weight, start + 0.6)
    assert torch.allclose(net.norm.running_mean, torch.full((2,), 1.2))  # buffers too
    with torch.no_grad():
        net.layer.weight.add_(1.0)
    _step(callback, net, 10)  # the last step: the network keeps the slow weights, the last move not taken
    assert torch.allclose(net.layer.weight, start + 0.6)


def test_a_fit_without_a_planned_length_is_refused_before_it_trains():
    with pytest.raises(LightningCifarError, match="Lookahead: the fit has no planned length"):
        _start(Lookahead(), _Net(), total=float("inf"))


@pytest.mark.parametrize("kwargs, message", [
    ({"every": 0}, "Lookahead every=0: must be a whole number of steps, at least 1"),
    ({"every": True}, "Lookahead every=True: must be a whole number of steps, at least 1"),
    ({"decay": 1.5}, "Lookahead decay=1.5: must be a number from 0 to 1"),
    ({"power": -1}, "Lookahead power=-1: must be a number, 0 or more"),
])
def test_bad_settings_are_refused_in_one_line(kwargs, message):
    with pytest.raises(LightningCifarError, match=message):
        Lookahead(**kwargs)


def test_a_fit_ends_on_the_slow_weights_saves_them_and_resumes_with_them(tmp_path, tiny_cifar, cli):
    data = [f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, *SMALL_NET, "--trainer.precision=32-true",
            f"--trainer.callbacks+={LOOKAHEAD}", "--trainer.callbacks.every=2", "--trainer.callbacks.decay=0.5"]
    cli(["fit", *data, "--trainer.max_epochs=1"], tmp_path)
    first = torch.load(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    saved = next(v for k, v in first["callbacks"].items() if k.startswith("Lookahead"))["slow"]
    floats = [v for v in first["state_dict"].values() if v.is_floating_point()]
    assert len(saved) == len(floats) and all(torch.equal(s, v) for s, v in zip(saved, floats))
    cli(["fit", *data, "--trainer.max_epochs=2", "--ckpt_path=last"], tmp_path)
    second = torch.load(tmp_path / "lightning_logs/version_1/checkpoints/last.ckpt", weights_only=True)
    assert second["global_step"] == 2 * first["global_step"]
    key = next(k for k in first["state_dict"] if k.endswith("features.0.weight"))
    assert not torch.equal(first["state_dict"][key], second["state_dict"][key])


def test_slow_weights_loaded_from_a_checkpoint_are_the_ones_a_resumed_fit_goes_on_with():
    torch.manual_seed(0)
    net, saved = _Net(), Lookahead(every=1, decay=0.5, power=0)
    _start(saved, net)
    with torch.no_grad():
        net.layer.weight.add_(1.0)
    _step(saved, net, 1)  # pull 0.5: slow = live = start + 0.5
    slow = net.layer.weight.detach().clone()
    resumed = Lookahead(every=1, decay=0.5, power=0)
    resumed.load_state_dict(saved.state_dict())
    with torch.no_grad():
        net.layer.weight.add_(4.0)  # the network moved on after the save
    _start(resumed, net)
    _step(resumed, net, 2)  # halfway from the restored slow weights to the network: +2 (a fresh start: +4)
    assert torch.allclose(net.layer.weight, slow + 2.0)


def test_slow_weights_of_another_network_are_refused_not_dropped():
    saved = Lookahead()
    _start(saved, _Net())
    other = _Net()
    other.layer = torch.nn.Linear(4, 2)
    resumed = Lookahead()
    resumed.load_state_dict(saved.state_dict())
    with pytest.raises(LightningCifarError, match="Lookahead: the checkpoint's slow weights do not fit this network"):
        _start(resumed, other)
