"""The command line on the tiny dataset: one real `fit` in a subprocess, the rest in this process."""

import csv
import re
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from lightning_cifar import Classifier
from lightning_cifar.data.datamodule import CIFAR10DataModule
from tests.helpers.runs import (
    PROBES_ENV,
    REPO,
    SMALL_NET,
    TINY_DATA_ARGS,
    one_line_error,
    run_cli,
    scalars,
    tiny_test_set,
)


def accuracy_of(ckpt, images, labels) -> float:
    """Test accuracy of a checkpoint, evaluated here without Lightning's loop."""
    model = Classifier.load_from_checkpoint(ckpt, map_location="cpu").eval()
    with torch.no_grad():
        return float((model.predict_logits(images).argmax(1) == labels).float().mean())


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_cifar):
    """One real `lightning-cifar fit` run in a fresh process, shared by the tests that inspect what it left."""
    cwd = tmp_path_factory.mktemp("fit_run")
    data = [f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS]
    result = run_cli(["fit", *data, "--trainer.max_epochs=4", "--seed_everything=1"], cwd)
    return cwd, data, result


def test_fit_writes_tensorboard_scalars_checkpoints_and_config(trained):
    cwd, _, result = trained
    run = cwd / "lightning_logs" / "version_0"
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in names
    best = [n for n in names if n.startswith("epoch")]
    assert len(best) == 1 and best[0].endswith(".ckpt") and "val_acc" in best[0]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["backbone"] == "cnn_base" and config["data"]["verify"] is False
    assert config["model"]["normalize"] is True and "normalize" not in config["data"]
    logged = scalars(run)
    assert len(logged["val/acc"]) == 4 and len(logged["train/acc_epoch"]) == 4
    assert {"train/loss_step", "train/lr", "val/loss"} <= set(logged) and "hp_metric" not in logged  # no placeholder
    hparams = EventAccumulator(str(run))
    hparams.Reload()
    experiment = HParamsPluginData.FromString(hparams.PluginTagToContent("hparams")["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["val/acc", "val/loss", "test/acc", "test/loss"]
    assert "backbone" in {h.name for h in experiment.hparam_infos}  # the HPARAMS tab compares runs by these
    assert logged["model/params"] == [131_370]
    # The tiny classes are easy: a working pipeline learns them, a broken one stays at chance (0.1).
    assert max(logged["val/acc"]) >= 0.5
    assert logged["train/loss_epoch"][-1] < logged["train/loss_epoch"][0]


def test_the_model_summary_counts_flops(tmp_path, tiny_cifar, cli):
    from lightning_cifar import registry
    from lightning_cifar.cli.summary import forward_flops

    args = ["fit", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, *SMALL_NET, "--trainer.max_steps=1",
            "--trainer.limit_val_batches=0", "--trainer.enable_model_summary=true", "--trainer.logger=false",
            "--trainer.enable_checkpointing=false"]
    result = cli(args, tmp_path)
    output = result.stdout + result.stderr
    flops = forward_flops(registry.create_backbone("convpool", widths=[8, 16], kernels=[5, 3]))
    line = next(line for line in output.splitlines() if line.rstrip().endswith("Total Flops"))
    assert line.split()[0] == f"{flops / 1e6:.1f}" and line.split()[1] == "M", output  # per image, not 0


@pytest.fixture(scope="module")
def best_not_newest(tmp_path_factory, tiny_cifar):
    """A run with three scored checkpoints whose newest is its worst: the classifier head is zeroed
    before the last validation, so every image gets the same class."""
    cwd = tmp_path_factory.mktemp("best_run")
    data = [f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, *SMALL_NET]
    run_cli(["fit", *data, "--trainer.max_epochs=3", "--seed_everything=2", "--checkpoint.save_top_k=3",
             "--trainer.precision=32-true", "--trainer.callbacks+=tests.helpers.probes.ZeroHeadBeforeValidation",
             "--trainer.callbacks.epoch=2"], cwd, env=PROBES_ENV)
    folder = cwd / "lightning_logs" / "version_0" / "checkpoints"
    scored = {p: float(p.stem.split("val_acc")[1]) for p in folder.glob("epoch*.ckpt")}
    assert len(scored) == 3
    newest = max(scored, key=lambda p: p.stat().st_mtime_ns)
    assert newest.name.startswith("epoch002") and scored[newest] < max(scored.values()), scored
    return cwd, data, scored


def test_best_is_the_highest_score_not_the_newest_file(best_not_newest, tiny_cifar, cli):
    cwd, data, scored = best_not_newest
    best = max(scored, key=scored.get)
    result = cli(["test", *data, "--trainer.precision=32-true", "--ckpt_path=best"], cwd)
    output = result.stdout + result.stderr
    assert f"--ckpt_path=best: using {best.relative_to(cwd)} (best val/acc {scored[best]:.4f}" in output
    logged = scalars(cwd / "lightning_logs" / "version_0" / "test" / "version_0")["test/acc"][0]  # next to the run it tests
    assert logged == pytest.approx(accuracy_of(best, *tiny_test_set(tiny_cifar)), abs=1e-6)


def test_best_falls_back_to_the_scores_in_the_file_names(best_not_newest, tmp_path):
    from lightning_cifar.checkpoints.run_folders import find_checkpoint

    cwd, _, scored = best_not_newest
    copy = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    copy.mkdir(parents=True)
    for path in scored:  # no last.ckpt: the newest file left records only what it knew
        shutil.copy2(path, copy / path.name)
    (copy / max(scored, key=lambda p: p.stat().st_mtime_ns).name).write_bytes(b"not a checkpoint")
    found = find_checkpoint("best", tmp_path)
    assert found.path.name == max(scored, key=scored.get).name and "scored checkpoints kept" in found.why


def test_val_split_zero_trains_on_every_image_and_keeps_the_last_checkpoint(tiny_cifar, tmp_path, cli):
    """The notebook's setting (no held-out images): all 200 tiny training images train, nothing
    validates, no warning per epoch about a missing val/acc, and last.ckpt is what there is to test."""
    data = [f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, *SMALL_NET, "--data.val_split=0"]
    fitted = cli(["fit", *data, "--trainer.max_epochs=2", "--trainer.precision=32-true"], tmp_path)
    output = fitted.stdout + fitted.stderr
    assert "--data.val_split=0: no validation, so checkpoints keep the last epoch only" in output
    assert "could not find the monitored key" not in output and "across ranks is zero" not in output
    folder = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
    last = folder / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2 * (200 // 32)  # 200 images, not 160
    assert "val/acc" not in scalars(tmp_path / "lightning_logs" / "version_0")
    tested = cli(["test", *data, "--trainer.precision=32-true", "--ckpt_path=last"], tmp_path)
    assert "Be aware" not in tested.stderr
    logged = scalars(tmp_path / "lightning_logs" / "version_0" / "test" / "version_0")["test/acc"][0]
    assert logged == pytest.approx(accuracy_of(last, *tiny_test_set(tiny_cifar)), abs=1e-6)
    refused = cli(["test", *data, "--ckpt_path=best"], tmp_path, check=False)
    assert "--ckpt_path=best: no scored best checkpoint" in one_line_error(refused)


def test_validate_and_predict_agree_with_load_from_checkpoint(trained, tiny_cifar, cli):
    cwd, data, _ = trained
    ckpt = cwd / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    result = cli(["validate", *data, "--ckpt_path=last"], cwd)
    assert "val/acc" in result.stdout
    out = cwd / "predictions"
    cli(["predict", *data, f"--ckpt_path={ckpt}", f"--predictions.output_dir={out}"], cwd)
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 60 and set(rows[0]) >= {"index", "pred", "pred_class", "prob", "target"}

    model = Classifier.load_from_checkpoint(ckpt)  # no extra arguments
    assert model.hparams.backbone == "cnn_base"
    images, labels = tiny_test_set(tiny_cifar)  # plain [0, 1] images: the model standardises them
    model.eval()
    with torch.no_grad():
        preds = model(images).argmax(1)
    assert [int(r["pred"]) for r in rows] == preds.tolist()
    assert [int(r["target"]) for r in rows] == labels.tolist()


def test_print_config_round_trips_through_yaml(tmp_path, cli):
    args = ["fit", "--model.backbone=cnn_wide", '--model.backbone_kwargs={"width_mult": 0.5, "kernels": [5, 3, 3]}',
            "--data.batch_size=128", "--print_config"]
    first = cli(args, tmp_path).stdout
    (tmp_path / "config.yaml").write_text(first)
    second = cli(["fit", "-c", "config.yaml", "--print_config"], tmp_path).stdout
    assert first == second
    config = yaml.safe_load(first)
    assert config["model"]["backbone"] == "cnn_wide"
    assert config["model"]["backbone_kwargs"] == {"width_mult": 0.5, "kernels": [5, 3, 3]}
    assert config["data"]["batch_size"] == 128
    assert config["checkpoint"]["monitor"] == "val/acc" and config["report"]["enabled"] is True


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_parse(config, tmp_path, cli):
    result = cli(["fit", "-c", str(REPO / "configs" / config), "--print_config"], tmp_path)
    parsed = yaml.safe_load(result.stdout)
    assert parsed["model"]["backbone"] and isinstance(parsed["model"]["normalize"], bool)


@pytest.mark.parametrize("where", ["argument", "config file"])
def test_the_moved_normalize_option_says_where_it_went(tmp_path, cli, where):
    if where == "argument":
        args = ["fit", "--data.normalize=false"]
    else:
        (tmp_path / "old.yaml").write_text("data:\n  normalize: false\n")
        args = ["fit", "-c", "old.yaml"]
    line = one_line_error(cli(args, tmp_path, check=False))
    assert "data.normalize has moved to model.normalize" in line


def test_unknown_backbone_is_one_line_and_exit_2(tmp_path, tiny_cifar, cli):
    result = cli(["fit", "--model.backbone=cnn_wdie", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS],
                 tmp_path, check=False)
    line = one_line_error(result)
    assert "'cnn_wdie'" in line and "Did you mean 'cnn_wide'" in line


def test_backbone_kwargs_it_does_not_take_are_one_line(tmp_path, tiny_cifar, cli):
    result = cli(["fit", '--model.backbone_kwargs={"kernels": [3, 5, 7]}', f"--data.data_dir={tiny_cifar}",
                  *TINY_DATA_ARGS], tmp_path, check=False)
    assert "must not increase" in one_line_error(result)


def test_missing_data_without_download_is_one_line(tmp_path, cli):
    result = cli(["fit", f"--data.data_dir={tmp_path / 'nowhere'}", "--data.download=false"], tmp_path, check=False)
    assert "--data.data_dir" in one_line_error(result)


def test_offline_default_run_says_how_to_point_at_the_data(tmp_path, cli):
    # A proxy on a closed loopback port makes the download fail at once, as offline.
    closed = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "no_proxy": ""}
    line = one_line_error(cli(["fit"], tmp_path, env=closed, check=False))
    assert "could not download CIFAR-10" in line and "--data.data_dir" in line


def test_checkpoint_alias_with_no_runs_is_one_line(tmp_path, tiny_cifar, cli):
    result = cli(["test", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, "--ckpt_path=last"], tmp_path, check=False)
    assert "--ckpt_path=last: no last checkpoint" in one_line_error(result)


def test_parse_errors_exit_2(tmp_path, cli):
    result = cli(["fit", "--model.optimizer=rmsprop", "--print_config"], tmp_path, check=False)
    assert result.returncode == 2 and "rmsprop" in result.stderr


def test_lightning_alias_runs_the_same_cli(tmp_path):
    canonical = run_cli(["backbones", "cnn_*"], tmp_path).stdout
    alias = run_cli(["backbones", "cnn_*"], tmp_path, prog="lightning").stdout
    assert canonical == alias
    assert [line.split()[0] for line in canonical.splitlines()] == ["cnn_base", "cnn_deep", "cnn_fast", "cnn_seed", "cnn_wide"]
    assert "131,370" in canonical
    module = subprocess.run([sys.executable, "-m", "lightning_cifar", "backbones", "mlp*"], capture_output=True,
                            text=True, cwd=tmp_path, timeout=120)
    assert module.stdout.split()[0] == "mlp"


def test_no_backbone_matches_pattern_is_an_error(tmp_path, cli):
    assert "no backbone matches 'resnet*'" in one_line_error(cli(["backbones", "resnet*"], tmp_path, check=False))


def test_example_plugin_installs_registers_and_trains(tmp_path, tiny_cifar):
    source = tmp_path / "plugin"
    shutil.copytree(REPO / "examples" / "plugin", source)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    assert (site / "lightning_cifar_allconv-0.1.0.dist-info" / "entry_points.txt").is_file()
    env = {"PYTHONPATH": str(site)}
    listing = run_cli(["backbones", "all*"], tmp_path, env=env).stdout
    assert listing.split()[0] == "allconv" and "All-convolutional" in listing
    run_cli(["fit", "--model.backbone=allconv", '--model.backbone_kwargs={"width": 8}', "--trainer.max_epochs=1",
             "--trainer.precision=bf16-mixed", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS], tmp_path, env=env)
    ckpt = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["backbone"] == "allconv"
    assert "val/acc" in scalars(ckpt.parent.parent)


def test_help_lists_the_other_commands_one_per_line(tmp_path, cli):
    lines = cli(["--help"], tmp_path).stdout.splitlines()
    for command in ("backbones [PATTERN]", "study -c STUDY.yaml", "summary --model.backbone", "export --ckpt_path"):
        assert any(line.strip().startswith(f"lightning-cifar {command}") for line in lines), command


def test_the_data_module_yields_unit_range_images_for_the_model(tiny_cifar):
    dm = CIFAR10DataModule(tiny_cifar, verify=False, download=False, val_split=40, augment="none")
    dm.setup("fit")
    x, _ = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_fit_ends_naming_its_run_folder_checkpoints_and_best_score(tmp_path, tiny_cifar, cli):
    result = cli(["fit", f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, *SMALL_NET, "--trainer.max_epochs=2"],
                 tmp_path)  # TINY_DATA_ARGS turn the progress bar off: the summary is all there is
    out = result.stdout + result.stderr
    assert "fit finished 2 epochs" in out
    run = tmp_path / "lightning_logs" / "version_0"
    folder = next(line for line in out.splitlines() if "run folder:" in line)
    assert "lightning_logs/version_0" in folder and "tensorboard --logdir lightning_logs" in folder
    best = next(line for line in out.splitlines() if "best checkpoint:" in line)
    path, score = best.split("best checkpoint:")[1].split("  (val/acc ")
    assert (tmp_path / path.strip()).is_file() and (tmp_path / path.strip()).parent == run / "checkpoints"
    assert f"val_acc{float(score.rstrip(')')):.4f}" in path  # the score in the line is the file's
    assert "last checkpoint: lightning_logs/version_0/checkpoints/last.ckpt" in out


def test_a_run_folder_names_that_runs_best_checkpoint(best_not_newest, tiny_cifar, cli):
    cwd, data, scored = best_not_newest
    best = max(scored, key=scored.get)
    for named in ("lightning_logs/version_0", "lightning_logs/version_0/checkpoints"):
        result = cli(["validate", *data, "--trainer.precision=32-true", f"--ckpt_path={named}",
                      "--trainer.logger=false"], cwd)
        assert f"--ckpt_path={named}: using {best.relative_to(cwd)} (best val/acc" in result.stdout + result.stderr
    (cwd / "empty_run").mkdir(exist_ok=True)
    line = one_line_error(cli(["test", *data, "--ckpt_path=empty_run"], cwd, check=False))
    assert "--ckpt_path=empty_run: a folder with no checkpoint" in line


def test_evaluating_a_checkpoint_writes_next_to_its_run_or_to_output(tmp_path, tiny_cifar, cli):
    data = [f"--data.data_dir={tiny_cifar}", *TINY_DATA_ARGS, *SMALL_NET]
    cli(["fit", *data, "--trainer.max_epochs=1"], tmp_path)
    run = tmp_path / "lightning_logs" / "version_0"
    tested = cli(["test", *data, "--ckpt_path=last"], tmp_path)
    said = tested.stdout + tested.stderr
    assert "test wrote to lightning_logs/version_0/test/version_0 (tensorboard --logdir" in said
    assert "report in lightning_logs/version_0/test/version_0/test_report" in said
    predicted = cli(["predict", *data, "--ckpt_path=best"], tmp_path)
    assert "predictions to lightning_logs/version_0/predict/version_0/predictions.csv" in predicted.stdout + predicted.stderr
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == ["version_0"]  # no new run folders
    assert "test/acc" in scalars(run / "test" / "version_0") and (run / "test" / "version_0" / "test_report").is_dir()
    assert (run / "predict" / "version_0" / "predictions.csv").is_file()
    cli(["test", *data, "--ckpt_path=last", "--model.tta=true"], tmp_path)  # a second evaluation: its own folder
    assert "tta: true" in (run / "test" / "version_1" / "hparams.yaml").read_text()
    cli(["validate", *data, "--ckpt_path=last", f"--output={tmp_path / 'elsewhere'}"], tmp_path)
    assert "val/acc" in scalars(tmp_path / "elsewhere")
    line = one_line_error(cli(["fit", *data, "--output=x"], tmp_path, check=False))
    assert "--output is for validate, test and predict" in line


@pytest.mark.parametrize("command", ["fit", "test"])
def test_a_command_that_fails_leaves_no_run_folder_behind(tmp_path, cli, command):
    args = [command, f"--data.data_dir={tmp_path / 'no_data'}", "--data.download=false", *TINY_DATA_ARGS[2:], *SMALL_NET]
    if command == "test":
        args.append(f"--output={tmp_path / 'tested'}")
    line = one_line_error(cli(args, tmp_path, check=False))
    assert "no CIFAR-10 at" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def readme_tags() -> set[str]:
    """The TensorBoard tags the README lists, in its bullet that starts "Logged"."""
    readme = (REPO / "README.md").read_text()
    bullet = readme[readme.index("- Logged (TensorBoard tags):"):]
    bullet = bullet[:bullet.index("\n- ")]
    return set(re.findall(r"`([a-z_]+(?:/[a-z_<>]+)*)`", bullet))


def test_the_readme_lists_the_tensorboard_tags_the_runs_write(trained, tiny_cifar, cli):
    cwd, data, _ = trained
    cli(["test", *data, "--ckpt_path=last"], cwd)
    run = cwd / "lightning_logs" / "version_0"
    fit_tags, test_tags = set(scalars(run)), set(scalars(run / "test" / "version_0"))
    classes = {t for t in test_tags if t.startswith("test/acc_class/")}
    assert len(classes) == 10
    written = (fit_tags | test_tags) - classes | {"test/acc_class/<class>"}
    assert readme_tags() == written


def test_options_lists_the_projects_own_options_with_their_defaults_first(tmp_path, cli):
    import inspect

    listed = cli(["options"], tmp_path).stdout
    assert len(listed.splitlines()) < 120  # against the 900 of `fit --help`
    for name in inspect.signature(Classifier).parameters:
        assert f"--model.{name}=" in listed, name
    for line in ("--model.backbone=cnn_base ", "--data.data_dir=./data ", "--checkpoint.monitor=val/acc ",
                 "--threads.count=null ", "--report.enabled=true "):
        assert line in listed, line
    helped = cli(["fit", "--help"], tmp_path).stdout
    assert helped.startswith("usage: lightning-cifar fit [options]\n")
    assert "the project's own options, short: `lightning-cifar options`" in helped[:300]
