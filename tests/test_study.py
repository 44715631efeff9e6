"""The study: plan, shards, resume after a kill, statistics, report."""

import csv
import json
import math
import signal
import subprocess
import time

import pytest
import yaml

from conftest import SUBPROCESS_TIMEOUT, one_line_error, scalars, script
from lightning_cifar.errors import LightningCifarError
from lightning_cifar.study.config import StudyConfigError, load_study, parse_study
from lightning_cifar.study.plan import BASELINE_AXIS, expand, parse_shard, shard
from lightning_cifar.study.report import ahead, write_report
from lightning_cifar.study.runner import RESULT_COLUMNS
from lightning_cifar.study.stats import difference_ci, mean_ci, slope_ci

BASE = {"backbone": "convpool", "kwargs": {"widths": [4, 8], "kernels": [3, 3]}}


def tiny_study(data_dir, **overrides):
    study = {
        "name": "tiny",
        "base": BASE,
        "recipe": {
            "trainer": {"max_epochs": 1, "precision": "32-true", "num_sanity_val_steps": 0},
            "model": {"lr": 0.05},
            "data": {"data_dir": str(data_dir), "verify": False, "download": False, "val_split": 40,
                     "batch_size": 32, "eval_batch_size": 50},
        },
        "axes": [{"name": "width", "param": "width_mult", "values": [0.5, 1]},
                 {"name": "depth", "param": "blocks", "values": [1, 2]}],
        "baselines": [{"label": "mlp_tiny", "backbone": "mlp_net", "kwargs": {"hidden": [4]}}],
        "seeds": [0, 1],
    }
    study.update(overrides)
    return study


def write_study(path, study):
    path.write_text(yaml.safe_dump(study))
    return path


# -- plan ---------------------------------------------------------------------------------


def test_plan_is_axes_times_seeds_with_everything_else_fixed(tmp_path):
    study = parse_study(tiny_study(tmp_path))
    runs = expand(study)
    # width 0.5, width 1 (= depth 2, the base network: trained once), depth 1, the MLP; two seeds each
    assert len(runs) == 4 * 2
    base = [r for r in runs if len(r.points) == 2]
    assert len(base) == 2 and {p.axis for p in base[0].points} == {"width", "depth"}
    for run in runs:
        assert run.recipe == study.recipe
        if run.backbone == "convpool":
            assert {k: v for k, v in run.kwargs.items() if k not in ("width_mult", "blocks")} == BASE["kwargs"]
    assert {r.seed for r in runs} == {0, 1}
    assert [r for r in runs if r.points[0].axis == BASELINE_AXIS][0].kwargs == {"hidden": [4]}
    assert len({r.run_id for r in runs}) == len(runs)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_shards_partition_the_plan_exactly(tmp_path, n):
    runs = expand(parse_study(tiny_study(tmp_path)))
    parts = [shard(runs, k, n) for k in range(n)]
    ids = [r.run_id for part in parts for r in part]
    assert sorted(ids) == sorted(r.run_id for r in runs) and len(ids) == len(set(ids))


@pytest.mark.parametrize("text", ["3/3", "1", "a/b", "-1/2", "0/0"])
def test_bad_shard_is_refused(text):
    with pytest.raises(StudyConfigError, match="--shard"):
        parse_shard(text)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"axes": [], "baselines": []}, "zero runs"),
        ({"axes": [{"name": "w", "param": "width_mult", "values": []}]}, "'values' is empty"),
        ({"seeds": []}, "'seeds' must be a non-empty list"),
        ({"colour": "blue"}, "unknown key"),
        ({"axes": [{"name": "w", "param": "widths", "values": [[8, 16]]}]}, "'base.kwargs' also fixes"),
    ],
)
def test_study_configs_that_cannot_work_are_refused(tmp_path, change, message):
    with pytest.raises(StudyConfigError, match=message):
        parse_study(tiny_study(tmp_path, **change))


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nbase:\n  backbone: convpool\n  kwargs: {widths: [1, 2\nseeds: [0]\n")
    with pytest.raises(StudyConfigError, match=r"bad.yaml: line \d+, column \d+: malformed YAML"):
        load_study(path)


# -- statistics -----------------------------------------------------------------------------


def test_statistics_match_hand_computed_values():
    e = mean_ci([0.5, 0.6, 0.7])
    # t(0.975, 2) = 4.302653; std 0.1; n 3
    assert e.value == pytest.approx(0.6) and e.half == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    d = difference_ci([0.7, 0.8, 0.9], [0.5, 0.6, 0.7])
    # equal variances and sizes: Welch df = 4, se = sqrt(2 * 0.01 / 3); t(0.975, 4) = 2.776445
    assert d.value == pytest.approx(0.2) and d.half == pytest.approx(2.776445 * math.sqrt(0.02 / 3), rel=1e-5)
    assert not d.excludes_zero  # 0.2 - 0.227 < 0
    s = slope_ci([0, 1, 2, 3], [1.0, 3.0, 5.0, 7.0])
    assert s.value == pytest.approx(2.0) and s.half == pytest.approx(0.0, abs=1e-12)
    assert mean_ci([0.42]).half is None


# -- report -----------------------------------------------------------------------------------


def test_differences_read_as_ahead_or_behind():
    assert ahead(0.0254) == "2.54 points ahead" and ahead(-0.0698) == "6.98 points behind"


def fake_results(path):
    rows = [RESULT_COLUMNS]
    noise = [-0.002, 0.0, 0.002]

    def add(axis, value, backbone, params, accs, time_s):
        kwargs = {"width": {"width_mult": value}, "depth": {"blocks": value}}.get(axis, {})
        for seed, acc in enumerate(accs):
            rows.append([axis, value, f"{backbone}-{axis}{value}-s{seed}", "k", backbone, json.dumps(kwargs),
                         seed, params, params * 100, 2, time_s, 1000.0, acc, acc, 1.0 - acc, json.dumps([acc - 0.1, acc])])

    for i, w in enumerate([1, 2, 4]):  # +5 points per doubling
        add("width", w, "convpool", 10_000 * 4**i, [0.50 + 0.05 * i + e for e in noise], 10 + 10 * i)
    add("depth", 1, "convpool", 5_000, [0.45 + e for e in noise], 8)
    add("depth", 2, "convpool", 10_000, [0.50 + e for e in noise], 10)
    add("depth", 3, "convpool", 15_000, [0.501 + e for e in noise], 12)  # within noise of depth 2
    add(BASELINE_AXIS, "mlp_seed", "mlp_seed", 404_010, [0.40 + e for e in noise], 5)
    with open(path / "results.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_report_renders_every_section_plot_and_computed_answer(tmp_path):
    fake_results(tmp_path)
    report = write_report(tmp_path, {"name": "fake", "hardware": "test CPU", "recipe": "trainer: {}\n"}, "cmd")
    text = report.read_text()
    for name in ("width.png", "depth.png", "cnn_vs_mlp.png", "curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    for heading in ("## Setup", "## Width: axis `width`", "## Depth: axis `depth`", "## CNN vs. fully connected",
                    "## Learning curves"):
        assert heading in text
    assert "Each doubling of the width (`width_mult`) changes test accuracy by +5.00 points on average" in text
    assert "Each added conv-pool block changes test accuracy by" in text
    assert "- 2 → 3: +0.10 points" in text and "within noise (the CI includes 0)" in text
    assert "`mlp_seed`" in text and "ahead" in text
    with open(tmp_path / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    width2 = next(r for r in summary if r["axis"] == "width" and r["value"] == "2")
    assert int(width2["n"]) == 3 and float(width2["mean_test_acc"]) == pytest.approx(0.55)


# -- the command ------------------------------------------------------------------------------


def results_by_run(out):
    with open(out / "results.csv") as f:
        return {r["run_id"]: r for r in csv.DictReader(f)}


def test_study_runs_resumes_and_reports(tmp_path, tiny_cifar, cli):
    config = write_study(tmp_path / "study.yaml", tiny_study(tiny_cifar))
    out = tmp_path / "out"
    dry = cli(["study", "-c", str(config), "--out", str(out), "--dry-run"], tmp_path).stdout
    assert dry.count("-s0 ") + dry.count("-s1 ") == 8 and "estimated" in dry and not out.exists()

    cli(["study", "-c", str(config), "--out", str(out)], tmp_path)
    rows = results_by_run(out)
    assert len({r["run_id"] for r in rows.values()}) == 8
    for name in ("report.md", "summary.csv", "width.png", "depth.png", "cnn_vs_mlp.png", "curves.png"):
        assert (out / name).is_file(), name
    for run_id, row in rows.items():
        logged = scalars(out / "tensorboard" / run_id)
        # The curve holds every epoch's val/acc, and the result the run's own logged test accuracy.
        curve = json.loads(row["val_acc_curve"])
        assert len(curve) == int(row["epochs"]) == len(logged["val/acc"]), run_id
        assert curve == pytest.approx(logged["val/acc"], abs=1e-5) and float(row["best_val_acc"]) == max(curve)
        assert float(row["test_acc"]) == pytest.approx(logged["test/acc"][-1], abs=1e-5)
        assert int(row["params"]) == int(logged["model/params"][0])
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")}

    again = cli(["study", "-c", str(config), "--out", str(out)], tmp_path).stdout
    assert "8 of 8 runs already done; 0 to run" in again
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")}

    # A result of an earlier version of the config, left in the folder, does not mix in.
    stray = out / "runs" / "mlp_net-0000000000-s0"
    stray.mkdir()
    (stray / "result.json").write_text(json.dumps({**json.loads(next((out / "runs").glob("mlp*/result.json"))
                                                               .read_text()), "run_id": stray.name}))
    cli(["study", "-c", str(config), "--out", str(out), "--report-only"], tmp_path)
    assert "## Width: axis `width`" in (out / "report.md").read_text()
    assert len(results_by_run(out)) == 8 and stray.name not in results_by_run(out)


def test_a_killed_study_loses_only_the_run_in_progress(tmp_path, tiny_cifar, cli):
    config = write_study(tmp_path / "study.yaml", tiny_study(tiny_cifar, seeds=[0, 1, 2]))
    out = tmp_path / "out"
    with open(tmp_path / "study.log", "w") as log:  # a file, not a pipe nobody reads
        proc = subprocess.Popen([script("lightning-cifar"), "study", "-c", str(config), "--out", str(out)],
                                cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + SUBPROCESS_TIMEOUT
        while len(list((out / "runs").glob("*/result.json"))) < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finished = {p.parent.name for p in (out / "runs").glob("*/result.json")}
    assert 2 <= len(finished) < 12
    assert set(results_by_run(out)) <= finished  # the CSV is never half-written, never ahead of the runs

    resumed = cli(["study", "-c", str(config), "--out", str(out)], tmp_path).stdout
    assert f"{len(finished)} of 12 runs already done; {12 - len(finished)} to run" in resumed
    assert len(results_by_run(out)) == 12


def test_shards_together_make_the_whole_study(tmp_path, tiny_cifar, cli):
    config = write_study(tmp_path / "study.yaml", tiny_study(tiny_cifar, seeds=[0]))
    out = tmp_path / "out"
    for k in range(2):
        cli(["study", "-c", str(config), "--out", str(out), "--shard", f"{k}/2"], tmp_path)
    assert len(results_by_run(out)) == 4


def test_study_errors_are_one_line(tmp_path, cli):
    bad = write_study(tmp_path / "study.yaml", {"name": "x", "base": BASE, "seeds": [0]})
    assert "zero runs" in one_line_error(cli(["study", "-c", str(bad), "--out", str(tmp_path / "o")], tmp_path,
                                             check=False))
    with pytest.raises(LightningCifarError):
        parse_study([1, 2])


# -- one source of defaults -------------------------------------------------------------------


@pytest.mark.parametrize("section, key, hint", [("model", "lrr", "did you mean 'lr'?"),
                                                ("trainer", "max_epoch", "did you mean 'max_epochs'?"),
                                                ("data", "normalize", "")])
def test_a_misspelled_recipe_key_fails_when_the_study_is_loaded(tmp_path, section, key, hint):
    study = tiny_study(tmp_path)
    study["recipe"][section][key] = 1
    with pytest.raises(StudyConfigError) as err:
        parse_study(study)
    message = str(err.value)
    assert f"'recipe.{section}' has an unknown key {key!r}" in message and hint in message and "allowed:" in message
    assert "\n" not in message


def test_a_recipe_value_fit_refuses_stops_the_study_before_any_run(tmp_path, tiny_cifar, cli):
    study = tiny_study(tiny_cifar)
    study["recipe"]["model"]["optimizer"] = "rmsprop"
    config = write_study(tmp_path / "study.yaml", study)
    out = tmp_path / "out"
    line = one_line_error(cli(["study", "-c", str(config), "--out", str(out)], tmp_path, check=False))
    assert "refused by fit's parser" in line and "rmsprop" in line
    assert not list(out.glob("runs/*/result.json")) and not (out / "results.csv").exists()


def test_a_study_run_equals_a_fit_with_the_same_arguments(tmp_path, tiny_cifar, cli):
    """Same parser, same defaults: the hyperparameters, every epoch's val/acc and the test accuracy agree."""
    study = tiny_study(tiny_cifar, axes=[], seeds=[3],
                       baselines=[{"label": "cnn", "backbone": "convpool", "kwargs": BASE["kwargs"]}])
    study["recipe"]["trainer"] = {"max_epochs": 2}  # everything else from fit's defaults (bf16 here, 2 sanity steps)
    config = write_study(tmp_path / "study.yaml", study)
    out = tmp_path / "out"
    cli(["study", "-c", str(config), "--out", str(out)], tmp_path)
    (result_file,) = out.glob("runs/*/result.json")
    result = json.loads(result_file.read_text())

    cli(["fit", *result["fit_arguments"]], tmp_path)
    tested = cli(["test", *result["fit_arguments"], "--ckpt_path=last"], tmp_path)
    fit_run, study_run = tmp_path / "lightning_logs" / "version_0", out / "tensorboard" / result["run_id"]
    fit_hparams, study_hparams = (yaml.safe_load((d / "hparams.yaml").read_text()) for d in (fit_run, study_run))
    assert {k: v for k, v in fit_hparams.items()} == {k: v for k, v in study_hparams.items() if k in fit_hparams}
    assert fit_hparams["backbone_kwargs"] == BASE["kwargs"] and len(fit_hparams) > 10
    assert scalars(fit_run)["val/acc"] == pytest.approx(result["val_acc_curve"], abs=1e-5)
    fit_test = scalars(tmp_path / "lightning_logs" / "version_1")["test/acc"][-1]
    assert fit_test == pytest.approx(result["test_acc"], abs=1e-5), tested.stdout
