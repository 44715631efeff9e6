"""The precision a run trains in: the default picks what runs natively here, the CPU configs leave it to that
default, and bfloat16 asked for on a CPU that only emulates it is warned about in one line."""

from pathlib import Path

import pytest
import yaml

from lightning_cifar.cli import precision
from tests.helpers.runs import SMALL_NET, TINY_DATA_ARGS, trainer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("native, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_the_default_on_a_cpu_is_bf16_only_where_it_is_native(monkeypatch, cpu_only, native, expected):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert precision.default_precision() == expected


@pytest.mark.parametrize("asked", ["bf16-mixed", "bf16-true"])
def test_bf16_on_a_cpu_that_emulates_it_gets_a_one_line_warning(monkeypatch, tmp_path, asked):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    message = precision.emulated_bf16_warning(trainer(tmp_path, precision=asked))
    assert message is not None and "\n" not in message
    assert message.startswith(f"--trainer.precision={asked} on a CPU without native bfloat16")
    assert "--trainer.precision=32-true" in message


def test_no_warning_where_bf16_is_native_or_not_asked_for(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.emulated_bf16_warning(trainer(tmp_path, precision="32-true")) is None
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.emulated_bf16_warning(trainer(tmp_path, precision="bf16-mixed")) is None


def test_fit_warns_and_still_trains_in_bf16_when_asked(monkeypatch, tmp_path, tiny_cifar, cli):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match=r"--trainer.precision=bf16-mixed on a CPU without native bfloat16"):
        cli(["fit", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, *SMALL_NET, "--trainer.precision=bf16-mixed",
             "--trainer.max_steps=1", "--trainer.limit_val_batches=0"], tmp_path)
    saved = yaml.safe_load((tmp_path / "lightning_logs" / "version_0" / "config.yaml").read_text())
    assert saved["trainer"]["precision"] == "bf16-mixed"  # warned, not overridden


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO / "configs").glob("*cpu*.yaml")))
def test_the_cpu_configs_leave_the_precision_to_the_default(config):
    # A config that names bf16 runs 17x slower on a CPU that emulates it; the default picks bf16 where native.
    trainer_settings = yaml.safe_load((REPO / "configs" / config).read_text()).get("trainer") or {}
    assert "precision" not in trainer_settings
