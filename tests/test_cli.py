"""The console scripts end to end, in subprocesses, on the tiny dataset."""

import csv
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import REPO, TINY_DATA_ARGS, run_cli, scalars
from lightning_cifar import CIFAR10DataModule, Classifier


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_cifar):
    """One real `lightning-cifar fit` run, shared by the tests that inspect what it left."""
    cwd = tmp_path_factory.mktemp("fit_run")
    data = [f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS]
    result = run_cli(["fit", *data, "--trainer.max_epochs=4", "--seed_everything=1"], cwd)
    return cwd, data, result


def test_fit_writes_tensorboard_scalars_checkpoints_and_config(trained):
    cwd, _, _ = trained
    run = cwd / "lightning_logs" / "version_0"
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in names
    best = [n for n in names if n.startswith("epoch")]
    assert len(best) == 1 and best[0].endswith(".ckpt") and "val_acc" in best[0]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["backbone"] == "cnn_base" and config["data"]["verify"] is False
    logged = scalars(run)
    assert len(logged["val/acc"]) == 4 and len(logged["train/acc_epoch"]) == 4
    assert {"train/loss_step", "train/lr", "val/loss", "hp_metric"} <= set(logged)
    assert logged["model/params"] == [131_370]
    assert logged["hp_metric"][-1] == pytest.approx(logged["val/acc"][-1])
    # The tiny classes are easy: a working pipeline learns them, a broken one stays at chance (0.1).
    assert max(logged["val/acc"]) >= 0.5
    assert logged["train/loss_epoch"][-1] < logged["train/loss_epoch"][0]


def test_test_from_the_best_checkpoint_logs_test_accuracy(trained):
    cwd, data, _ = trained
    result = run_cli(["test", *data, "--ckpt_path=best"], cwd)
    best = next((cwd / "lightning_logs" / "version_0" / "checkpoints").glob("epoch*.ckpt"))
    assert f"--ckpt_path=best: using {best.relative_to(cwd)}" in result.stderr + result.stdout
    assert "test/acc" in result.stdout
    runs = sorted((cwd / "lightning_logs").iterdir(), key=lambda p: int(p.name.split("_")[1]))
    logged = scalars(runs[-1])
    assert 0.0 <= logged["test/acc"][0] <= 1.0 and "test/loss" in logged


def test_validate_and_predict_agree_with_load_from_checkpoint(trained, tiny_cifar):
    cwd, data, _ = trained
    ckpt = cwd / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    result = run_cli(["validate", *data, "--ckpt_path=last"], cwd)
    assert "val/acc" in result.stdout
    out = cwd / "predictions"
    run_cli(["predict", *data, f"--ckpt_path={ckpt}", f"--predictions.output_dir={out}"], cwd)
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 60 and set(rows[0]) >= {"index", "pred", "pred_class", "prob", "target"}

    model = Classifier.load_from_checkpoint(ckpt)  # no extra arguments
    assert model.hparams.backbone == "cnn_base"
    dm = CIFAR10DataModule(tiny_cifar, verify=False, download=False)
    dm.setup("test")
    x = dm.standardize(dm.to_float(dm.test_set.images))
    model.eval()
    with torch.no_grad():
        preds = model(x).argmax(1)
    assert [int(r["pred"]) for r in rows] == preds.tolist()
    assert [int(r["target"]) for r in rows] == dm.test_set.labels.tolist()


def test_print_config_round_trips_through_yaml(tmp_path):
    args = ["fit", "--model.backbone=cnn_wide", '--model.backbone_kwargs={"width_mult": 0.5, "kernels": [5, 3, 3]}',
            "--data.batch_size=128", "--print_config"]
    first = run_cli(args, tmp_path).stdout
    (tmp_path / "config.yaml").write_text(first)
    second = run_cli(["fit", "-c", "config.yaml", "--print_config"], tmp_path).stdout
    assert first == second
    config = yaml.safe_load(first)
    assert config["model"]["backbone"] == "cnn_wide"
    assert config["model"]["backbone_kwargs"] == {"width_mult": 0.5, "kernels": [5, 3, 3]}
    assert config["data"]["batch_size"] == 128


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_parse(config, tmp_path):
    result = run_cli(["fit", "-c", str(REPO / "configs" / config), "--print_config"], tmp_path)
    assert yaml.safe_load(result.stdout)["model"]["backbone"]


def one_line_error(result, exit_code=2):
    """The error is one line, the last one, after at most Lightning's own info lines; no traceback."""
    assert result.returncode == exit_code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    assert "Traceback" not in result.stderr and len(errors) == 1 and errors[0] == lines[-1], result.stderr
    assert errors[0].startswith("lightning-cifar: error: ")
    return errors[0]


def test_unknown_backbone_is_one_line_and_exit_2(tmp_path, tiny_cifar):
    result = run_cli(["fit", "--model.backbone=cnn_wdie", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS],
                     tmp_path, check=False)
    line = one_line_error(result)
    assert "'cnn_wdie'" in line and "Did you mean 'cnn_wide'" in line


def test_backbone_kwargs_it_does_not_take_are_one_line(tmp_path, tiny_cifar):
    result = run_cli(["fit", '--model.backbone_kwargs={"kernels": [3, 5, 7]}', f"--data.data_dir={tiny_cifar}",
                      *TINY_DATA_ARGS], tmp_path, check=False)
    assert "must not increase" in one_line_error(result)


def test_missing_data_without_download_is_one_line(tmp_path):
    result = run_cli(["fit", f"--data.data_dir={tmp_path / 'nowhere'}", "--data.download=false"], tmp_path, check=False)
    assert "--data.data_dir" in one_line_error(result)


def test_offline_default_run_says_how_to_point_at_the_data(tmp_path):
    # A proxy on a closed loopback port makes the download fail at once, as offline.
    closed = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "no_proxy": ""}
    result = run_cli(["fit"], tmp_path, env=closed, check=False)
    line = one_line_error(result)
    assert "could not download CIFAR-10" in line and "--data.data_dir" in line


def test_checkpoint_alias_with_no_runs_is_one_line(tmp_path, tiny_cifar):
    result = run_cli(["test", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, "--ckpt_path=last"], tmp_path,
                     check=False)
    assert "--ckpt_path=last: no last checkpoint" in one_line_error(result)


def test_parse_errors_exit_2(tmp_path):
    result = run_cli(["fit", "--model.optimizer=rmsprop", "--print_config"], tmp_path, check=False)
    assert result.returncode == 2 and "rmsprop" in result.stderr


def test_lightning_alias_runs_the_same_cli(tmp_path):
    canonical = run_cli(["backbones", "cnn_*"], tmp_path).stdout
    alias = run_cli(["backbones", "cnn_*"], tmp_path, prog="lightning").stdout
    assert canonical == alias
    assert [line.split()[0] for line in canonical.splitlines()] == ["cnn_base", "cnn_deep", "cnn_fast", "cnn_seed", "cnn_wide"]
    assert "131,370" in canonical
    assert subprocess.run([sys.executable, "-m", "lightning_cifar", "backbones", "mlp*"], capture_output=True,
                          text=True, cwd=tmp_path).stdout.split()[::1][0] == "mlp"


def test_no_backbone_matches_pattern_is_an_error(tmp_path):
    assert "no backbone matches 'resnet*'" in one_line_error(run_cli(["backbones", "resnet*"], tmp_path, check=False))


def test_example_plugin_installs_registers_and_trains(tmp_path, tiny_cifar):
    source = tmp_path / "plugin"
    shutil.copytree(REPO / "examples" / "plugin", source)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(source)],
        check=True, capture_output=True, text=True,
    )
    assert (site / "lightning_cifar_allconv-0.1.0.dist-info" / "entry_points.txt").is_file()
    env = {"PYTHONPATH": str(site)}
    listing = run_cli(["backbones", "all*"], tmp_path, env=env).stdout
    assert listing.split()[0] == "allconv" and "All-convolutional" in listing
    run_cli(["fit", "--model.backbone=allconv", '--model.backbone_kwargs={"width": 8}', "--trainer.max_epochs=1",
             "--trainer.precision=bf16-mixed", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS], tmp_path, env=env)
    ckpt = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["hyper_parameters"]["backbone"] == "allconv"
    assert "val/acc" in scalars(ckpt.parent.parent)


def test_help_lists_the_other_commands_one_per_line(tmp_path):
    lines = run_cli(["--help"], tmp_path).stdout.splitlines()
    for command in ("backbones [PATTERN]", "study -c STUDY.yaml", "summary --model.backbone", "export --ckpt_path"):
        assert any(line.strip().startswith(f"lightning-cifar {command}") for line in lines), command
