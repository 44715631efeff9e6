"""The study: config, plan (tuning, axes of any fit setting, baselines' own recipes, budget, anchors),
statistics against hand-computed values, runs, resume, shards, report."""

import csv
import json
import math
import re
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
import yaml
from scipy import stats as scipy_stats

from lightning_cifar.errors import LightningCifarError
from lightning_cifar.study.config import StudyConfigError, load_study, parse_study
from lightning_cifar.study.plan import (
    BASELINE_AXIS,
    Tuning,
    choose,
    expand,
    parse_shard,
    pending_families,
    shard,
    waits_for,
)
from lightning_cifar.study.runner import RESULT_COLUMNS, write_results_csv
from lightning_cifar.study.stats import (
    holm,
    line_with_lack_of_fit,
    mean_ci,
    paired_bootstrap,
    sampling_half_width,
    slope_ci,
)
from tests.helpers.runs import SUBPROCESS_TIMEOUT, one_core_busy, one_line_error, scalars, script
from tests.helpers.studies import BASE, tiny_study, write_study


def fake_arch(backbone, kwargs):
    return json.dumps([backbone, kwargs], sort_keys=True)


# -- config and plan ----------------------------------------------------------------------


def test_plan_is_axes_times_seeds_with_everything_else_fixed(tmp_path):
    study = parse_study(tiny_study(tmp_path))
    runs = expand(study)
    # width 0.5, width 1 (= depth 2, the base network: trained once), depth 1, the MLP; two seeds each
    assert len(runs) == 4 * 2
    base = [r for r in runs if len(r.points) == 2]
    assert len(base) == 2 and {p.axis for p in base[0].points} == {"width", "depth"}
    for run in runs:
        assert {k: v for k, v in run.config.items() if k != "model"} == {k: study.recipe[k] for k in ("trainer", "data")}
        if run.backbone == "convpool":
            assert {k: v for k, v in run.kwargs.items() if k not in ("width_mult", "blocks")} == BASE["kwargs"]
    assert {r.seed for r in runs} == {0, 1}
    assert [r for r in runs if r.points[0].axis == BASELINE_AXIS][0].kwargs == {"hidden": [4]}
    assert len({r.run_id for r in runs}) == len(runs)
    # The swept setting is recorded with each point, not inferred from the kwargs.
    assert {p.param for r in runs for p in r.points} == {"model.backbone_kwargs.width_mult",
                                                          "model.backbone_kwargs.blocks", "backbone"}


def test_axes_sweep_any_fit_setting_and_points_can_set_several(tmp_path):
    study = parse_study(tiny_study(tmp_path, axes=[
        {"name": "lr", "param": "model.lr", "values": [0.01, 0.1]},
        {"name": "augment", "param": "data.augment", "scale": "categorical", "values": ["none", "crop_flip"]},
        {"name": "epochs", "param": "trainer.max_epochs", "values": [1, 2]},
        {"name": "blocks_constant", "kind": "depth", "param": "blocks",
         "points": [{"value": 1, "set": {"widths": [8], "kernels": [3]}},
                    {"value": 2, "set": {"widths": [8, 8], "kernels": [5, 3]}}]},
    ]))
    configs = {p.label: r.config for r in expand(study, arch=fake_arch) for p in r.points}
    assert configs["lr=0.01"]["model"]["lr"] == 0.01 and configs["augment=none"]["data"]["augment"] == "none"
    assert configs["epochs=2"]["trainer"]["max_epochs"] == 2
    assert configs["blocks_constant=2"]["model"]["backbone_kwargs"] == {"widths": [8, 8], "kernels": [5, 3], "blocks": 2}


def test_a_baseline_carries_its_own_recipe(tmp_path):
    study = parse_study(tiny_study(tmp_path, baselines=[
        {"label": "mlp", "backbone": "mlp_net", "kwargs": {"hidden": [4]},
         "recipe": {"model.lr": 0.01, "trainer.max_epochs": 3, "data.augment": "none"}}]))
    (mlp,) = {r.config_key: r for r in expand(study, arch=fake_arch) if r.family == "mlp"}.values()
    assert mlp.config["model"]["lr"] == 0.01 and mlp.config["trainer"]["max_epochs"] == 3
    assert mlp.config["data"]["augment"] == "none" and study.recipe["model"]["lr"] == 0.05  # the CNNs keep theirs


def test_tuning_runs_first_and_the_winner_by_validation_accuracy_reaches_the_family(tmp_path):
    study = parse_study(tiny_study(tmp_path, tune=[{"family": "cnn", "grid": {"model.lr": [0.01, 0.1]}, "seeds": [0]},
                                                   {"family": "mlp_tiny", "grid": {"data.augment": ["none", "crop_flip"]}}]))
    runs = expand(study, arch=fake_arch)
    assert [r.roles[0] for r in runs][:4] == ["tune"] * 4 and "tune" not in {r.roles[0] for r in runs[4:]}
    cnn_tuning = [r for r in runs if "tune" in r.roles and r.family == "cnn"]
    # Validation accuracy decides; the test accuracy (here the other way round) plays no part.
    results = {r.run_id: {"seed": r.seed, "val_acc_curve": [0.2, 0.3 if r.config["model"]["lr"] == 0.1 else 0.25],
                          "test_acc": 0.9 if r.config["model"]["lr"] == 0.01 else 0.1,
                          "points": [{"axis": p.axis, "value": p.value, "settings": p.settings} for p in r.points]}
               for r in cnn_tuning}
    tuning = choose(study, results)
    assert tuning.winners == {"cnn": {"model.lr": 0.1}} and tuning.pending == {"mlp_tiny": 2}
    main = [r for r in expand(study, tuning, arch=fake_arch) if "main" in r.roles and r.family == "cnn"]
    assert main and all(r.config["model"]["lr"] == 0.1 for r in main)


def test_budget_and_anchor_runs(tmp_path):
    anchor = tmp_path / "anchor.yaml"
    anchor.write_text("trainer: {max_epochs: 2}\nmodel: {backbone: mlp_seed, optimizer: adam}\ndata: {augment: seed}\n")
    study = parse_study(tiny_study(tmp_path, budget={"multiplier": 4, "seeds": [0], "points": ["base", "mlp_tiny"]},
                                   anchors=[{"label": "notebook", "config": str(anchor), "seeds": [0, 1],
                                             "reported": 0.4728}]))
    runs = expand(study, arch=fake_arch)
    budget = [r for r in runs if "budget" in r.roles]
    assert sorted(r.config["trainer"]["max_epochs"] for r in budget) == [4, 4] and {r.seed for r in budget} == {0}
    anchors = [r for r in runs if "anchor" in r.roles]
    assert len(anchors) == 2 and anchors[0].config["model"] == {"backbone": "mlp_seed", "optimizer": "adam"}
    # The anchor keeps its own recipe and takes only where the data lives from the study.
    assert anchors[0].config["data"] == {"data_dir": str(tmp_path), "download": False, "verify": False,
                                         "augment": "seed"}


def tuning_results(runs, prefix, val_of):
    """Result records of the tuning runs whose points start with ``prefix``, scored ``val_of(run)`` on the validation
    split and the other way round on the test set (which must play no part)."""
    return {r.run_id: {"seed": r.seed, "val_acc_curve": [0.2, val_of(r)], "test_acc": 1 - val_of(r),
                       "points": [{"axis": p.axis, "value": p.value, "settings": p.settings} for p in r.points]}
            for r in runs if any(p.axis.startswith(prefix) for p in r.points)}


def test_the_budget_check_chooses_its_recipe_again_at_its_epochs(tmp_path):
    study = parse_study(tiny_study(tmp_path, tune=[{"family": "cnn", "grid": {"model.lr": [0.01, 0.1]}}],
                                   budget={"multiplier": 4, "seeds": [0], "points": ["base", "width=0.5"],
                                           "tune": [{"family": "cnn", "grid": {"model.lr": [0.1, 0.3]}}]}))
    runs = expand(study, arch=fake_arch)
    longer_tuning = [r for r in runs if any(p.axis == "tune@4x:cnn" for p in r.points)]
    assert len(longer_tuning) == 2 and all(r.config["trainer"]["max_epochs"] == 4 for r in longer_tuning)
    # Order: the study's tuning, the main runs, the tuning at 4x, then the budget runs it decides.
    assert max(runs.index(r) for r in runs if "main" in r.roles) < min(runs.index(r) for r in longer_tuning)
    assert max(runs.index(r) for r in longer_tuning) < min(runs.index(r) for r in runs if r.roles == ("budget",))
    pending = pending_families(study, Tuning())
    assert pending == {"cnn", "cnn@4x"}
    assert {waits_for(r, study, pending) for r in runs if r.roles == ("budget",)} == {"cnn@4x"}
    assert {waits_for(r, study, pending) for r in longer_tuning} == {None}
    assert {waits_for(r, study, {"cnn@4x"}) for r in runs if "main" in r.roles and r.family == "cnn"} == {None}

    results = tuning_results(runs, "tune:", lambda r: 0.5 if r.config["model"]["lr"] == 0.1 else 0.4)
    results |= tuning_results(runs, "tune@4x:", lambda r: 0.6 if r.config["model"]["lr"] == 0.3 else 0.5)
    tuning = choose(study, results)
    assert tuning.winners == {"cnn": {"model.lr": 0.1}} and tuning.budget.winners == {"cnn": {"model.lr": 0.3}}
    plan = expand(study, tuning, arch=fake_arch)
    main = [r for r in plan if "main" in r.roles and r.family == "cnn"]
    budget = [r for r in plan if "budget" in r.roles]
    assert main and {r.config["model"]["lr"] for r in main} == {0.1}
    assert len(budget) == 2
    assert {(r.config["model"]["lr"], r.config["trainer"]["max_epochs"]) for r in budget} == {(0.3, 4)}
    # The winning candidate's run at 4x is the base network's budget run of its seed: trained once.
    assert any(set(r.roles) == {"tune", "budget"} for r in budget)


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
        ({"axes": [{"name": "w", "param": "model.lrr", "values": [1]}]}, "fit has no setting 'model.lrr'.*'lr'"),
        ({"axes": [{"name": "w", "param": "width_mult", "scale": "log3", "values": [1]}]}, "scale 'log3'"),
        ({"tune": [{"family": "resnet", "grid": {"model.lr": [1]}}]}, "family 'resnet'"),
        ({"budget": {"multiplier": 4, "points": ["width=3"]}}, "budget point 'width=3'"),
        ({"tune": [{"family": "cnn", "grid": {"model.lr": [1]}}],
          "budget": {"multiplier": 4, "points": ["base"],
                     "tune": [{"family": "cnn", "grid": {"data.augment": ["none"]}}]}},
         r"budget.tune \(cnn\): the grid must also set model.lr"),
        ({"budget": {"multiplier": 4, "points": ["base"], "tunes": []}}, r"budget: unknown key\(s\) \['tunes'\]"),
        ({"anchors": [{"label": "a", "config": "nowhere.yaml"}]}, "does not exist"),
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


# -- statistics ---------------------------------------------------------------------------------


def test_seed_statistics_match_hand_computed_values():
    e = mean_ci([0.5, 0.6, 0.7])
    # t(0.975, 2) = 4.302653; std 0.1; n 3
    assert e.value == pytest.approx(0.6) and e.half == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    s = slope_ci([0, 1, 2, 3], [1.0, 3.0, 5.0, 7.0])
    assert s.value == pytest.approx(2.0) and s.half == pytest.approx(0.0, abs=1e-12)
    assert mean_ci([0.42]).half is None


def test_paired_bootstrap_on_known_differences():
    rng = np.random.default_rng(1)
    easy = rng.random(2000) < 0.6  # as on real test sets, seeds mostly agree on which images are easy
    b = easy ^ (rng.random((3, 2000)) < 0.02)
    same = paired_bootstrap(b, b)  # the same runs on both sides: only seed resampling moves it
    assert same.value == 0 and same.low < 0 < same.high and same.p == 1.0
    one = paired_bootstrap(b[:1], b[:1])  # one seed each: identical in every resample
    assert (one.value, one.low, one.high, one.p) == (0, 0, 0, 1.0)
    a = b.copy()
    a[:, :200] = True  # a gets right every image b got right, plus some of the first 200
    c = paired_bootstrap(a, b)
    assert c.value == pytest.approx(float(a.mean() - b.mean())) and 0 < c.low < c.value < c.high and c.p < 0.01
    # Pairing: the same difference on images both get right or wrong together is tighter than unpaired noise.
    unpaired_se = math.sqrt(a.mean() * (1 - a.mean()) / a.size + b.mean() * (1 - b.mean()) / b.size)
    assert (c.high - c.low) / 2 < 1.96 * unpaired_se
    # No resample crossed zero: p is the bootstrap's floor, and the report writes Holm's multiple of it as a bound.
    assert c.p_at_floor and c.p == 1 / 2000 and not same.p_at_floor
    from lightning_cifar.study.report import word_text
    from lightning_cifar.study.stats import judge

    gain, = judge([c])
    assert word_text(gain) == "a gain (Holm-adjusted p ≤ 0.001)"
    assert word_text(judge([c] * 12)[0]) == "a gain (Holm-adjusted p ≤ 0.006)"
    assert word_text(judge([same])[0]).startswith("equal within ±1 point (two one-sided tests, Holm-adjusted p ≤ 0.001")


def test_holm_matches_hand_computed_values():
    # sorted p: 0.01 x4 = 0.04; 0.03 x3 = 0.09; 0.04 x2 = 0.08 -> 0.09 (monotone); 0.2 x1 = 0.2
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_lack_of_fit_matches_the_f_test_by_hand():
    x = [0, 0, 1, 1, 2, 2]
    y = [0.0, 0.1, 1.0, 1.1, 4.0, 4.1]
    fit = line_with_lack_of_fit(x, y)
    # line: slope 2.0, intercept -0.283; pure error: 6 x 0.05^2 = 0.015 (df 3);
    # lack of fit: 2 x (0.05 + 0.283 - 0)^2 ... computed here from the definitions.
    slope, intercept = np.polyfit(x, y, 1)
    means = {0: 0.05, 1: 1.05, 2: 4.05}
    ss_lof = sum(2 * (m - intercept - slope * xi) ** 2 for xi, m in means.items())
    f = (ss_lof / 1) / (0.015 / 3)
    assert fit.slope.value == pytest.approx(slope) and fit.lack_of_fit_p == pytest.approx(scipy_stats.f.sf(f, 1, 3))
    assert line_with_lack_of_fit([0, 0, 1, 1, 2, 2], [0, 0.1, 1, 1.1, 2, 2.1]).lack_of_fit_p > 0.5


def test_the_test_sets_own_sampling_error():
    assert sampling_half_width(0.7, 10_000) == pytest.approx(1.959964 * math.sqrt(0.21 / 10_000), rel=1e-5)


# -- the command ------------------------------------------------------------------------------


def results_by_run(out):
    import csv

    with open(out / "results.csv") as f:
        return {r["run_id"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def full_study(tmp_path_factory, tiny_cifar):
    """A tiny study with every part: tuning, two axes, a baseline with its own recipe, budget, anchor."""
    from tests.helpers.runs import fit_in_process

    folder = tmp_path_factory.mktemp("study")
    anchor = folder / "anchor.yaml"
    anchor.write_text(yaml.safe_dump({"trainer": {"max_epochs": 1, "num_sanity_val_steps": 0, "precision": "32-true"},
                                      "model": {"backbone": "mlp_seed", "optimizer": "adam", "lr": 0.001,
                                                "normalize": False},
                                      # like the notebook: every training image trains, nothing validates
                                      "data": {"val_split": 0, "batch_size": 40, "eval_batch_size": 50}}))
    study = tiny_study(tiny_cifar, tune=[{"family": "cnn", "grid": {"model.lr": [0.05, 0.2]}}],
                       baselines=[{"label": "mlp_tiny", "backbone": "mlp_net", "kwargs": {"hidden": [8]},
                                   "recipe": {"trainer.max_epochs": 2}}],
                       budget={"multiplier": 2, "seeds": [0], "points": ["base", "mlp_tiny"],
                               "tune": [{"family": "cnn", "grid": {"model.lr": [0.05, 0.2]}}]},
                       anchors=[{"label": "notebook_mlp", "config": str(anchor), "seeds": [0], "reported": 0.4728}])
    config = write_study(folder / "study.yaml", study)
    out = folder / "out"
    fit_in_process(["study", "-c", str(config), "--out", str(out)], folder)
    return folder, config, out, study


def test_study_runs_records_and_reports(full_study):
    folder, config, out, study = full_study
    results = [json.loads(p.read_text()) for p in out.glob("runs/*/result.json")]
    # 2 tuning runs (one is also a main run) and 2 more at the budget check's epochs (one is also its base run), 3 CNN
    # points x 2 seeds (the base shared), the MLP, budget, anchor
    roles = {r["run_id"]: r["roles"] for r in results}
    assert sum("tune" in v for v in roles.values()) == 4 and sum("anchor" in v for v in roles.values()) == 1
    assert sum("budget" in v for v in roles.values()) == 2
    labels = np.load(out / "test_labels.npy")
    for r in results:
        logged = scalars(out / "tensorboard" / r["run_id"])
        assert r["val_acc_curve"] == pytest.approx(logged.get("val/acc", []), abs=1e-5)
        assert ("anchor" in r["roles"]) == (r["val_acc"] is None)
        assert r["test_acc"] == pytest.approx(logged["test/acc"][-1], abs=1e-5)
        predictions = np.load(out / "runs" / r["run_id"] / "test_predictions.npy")
        # The saved predictions are the ones the logged test accuracy was computed from.
        assert predictions.shape == labels.shape and float((predictions == labels).mean()) == pytest.approx(r["test_acc"],
                                                                                                             abs=1e-5)
        assert len(r["train_acc_curve"]) == r["epochs"] and 0 <= r["train_acc"] <= 1 and r["train_loss"] > 0
        assert re.search(r", \d+ threads?$", r["device"]) and r["fit_arguments"][0].startswith("--seed_everything=")
        assert r["threads"] == torch.get_num_threads() and f"--threads.count={r['threads']}" in r["fit_arguments"]
    mlp = [r for r in results if r["family"] == "mlp_tiny" and "main" in r["roles"]]
    assert all(r["epochs"] == 2 for r in mlp)  # its own recipe
    report = (out / "report.md").read_text()
    for heading in ("## Answers", "## Recipes chosen on the validation split", "## Width: axis `width`",
                    "## Depth: axis `depth`", "## Width or depth at matched compute", "## CNN vs. fully connected",
                    "## The budget check", "## The seed notebook as anchor", "## Under- or over-fitting"):
        assert heading in report, heading
    assert "Holm-adjusted" in report and "machines: " in report and "Words follow one rule: " in report
    assert "### `cnn` at 2x the epochs" in report
    assert "each family with its recipe chosen again at that budget" in report
    assert "- seeds per point: 2 (seeds 0, 1);" in report
    for name in ("axes.png", "compute.png", "curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_reversing_the_axes_changes_no_number_in_the_report(full_study, tmp_path, cli):
    folder, config, out, study = full_study
    reversed_study = dict(study, axes=list(reversed(study["axes"])))
    other = write_study(tmp_path / "reversed.yaml", reversed_study)
    first = (out / "report.md").read_text()
    cli(["study", "-c", str(other), "--out", str(out), "--report-only"], tmp_path)
    second = (out / "report.md").read_text()
    cli(["study", "-c", str(config), "--out", str(out), "--report-only"], tmp_path)

    def sections(text):
        """Each section's lines, in any order (the axes come in the config's order): numbers and sentences."""
        parts = re.split(r"\n(?=## )", text)
        return {p.splitlines()[0]: sorted(line for line in p.splitlines() if line and not line.startswith("!["))
                for p in parts if p.startswith("## ")}

    assert sections(first) == sections(second)
    assert len(sections(first)) >= 9


def test_a_rerun_skips_everything(full_study, cli):
    folder, config, out, _ = full_study
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}
    again = cli(["study", "-c", str(config), "--out", str(out)], folder).stdout
    assert f"{len(stamps)} of {len(stamps)} runs already done; 0 to run" in again
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}


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
                       baselines=[{"label": "cnn_net", "backbone": "convpool", "kwargs": BASE["kwargs"]}])
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
    assert fit_hparams == {k: v for k, v in study_hparams.items() if k in fit_hparams}
    assert fit_hparams["backbone_kwargs"] == BASE["kwargs"] and len(fit_hparams) > 10
    assert scalars(fit_run)["val/acc"] == pytest.approx(result["val_acc_curve"], abs=1e-5)
    fit_test = scalars(tmp_path / "lightning_logs" / "version_0" / "test" / "version_0")["test/acc"][-1]
    assert fit_test == pytest.approx(result["test_acc"], abs=1e-5), tested.stdout


def test_tuning_is_done_before_the_runs_that_need_it(tmp_path):
    study = parse_study(tiny_study(tmp_path, tune=[{"family": "cnn", "grid": {"model.lr": [0.05, 0.2]}}]))
    pending = expand(study, Tuning(), arch=fake_arch)
    assert all(r.config["model"]["lr"] == 0.05 for r in pending if r.family == "cnn" and "main" in r.roles)


def test_a_run_trained_before_tuning_finished_serves_the_points_the_final_plan_gives_it(tmp_path):
    from lightning_cifar.study.report import Results

    study = parse_study(tiny_study(tmp_path, seeds=[0], baselines=[], tune=[{"family": "cnn", "grid": {"model.lr": [0.05, 0.2]}}],
                                   axes=[{"name": "width", "param": "width_mult", "values": [1]}]))
    before = expand(study)  # the real architecture hash: width_mult=1 is the base network
    first = next(r for r in before if len(r.points) == 2)  # the first candidate, planned as the main run too
    for run, val in ((first, 0.1), (next(r for r in before if len(r.points) == 1), 0.5)):
        record = {"version": 2, "run_id": run.run_id, "seed": run.seed, "roles": list(run.roles), "val_acc_curve": [val],
                  "test_acc": val, "points": [{"axis": p.axis, "value": p.value, "settings": p.settings} for p in run.points]}
        (tmp_path / "runs" / run.run_id).mkdir(parents=True)
        (tmp_path / "runs" / run.run_id / "result.json").write_text(json.dumps(record))
    results = {json.loads(p.read_text())["run_id"]: json.loads(p.read_text()) for p in tmp_path.glob("runs/*/result.json")}
    plan = expand(study, choose(study, results))
    group = Results(tmp_path, plan).group("width", 1)
    assert [r["test_acc"] for r in group.results] == [0.5]  # the winner's run, not the one recorded as "width=1"
    # The labels follow the final plan, in results.csv and in the runs' own files: the first candidate is a
    # tuning run only, the winner (trained as "tune") is also the main run of the base network.
    for record in results.values():
        record.update({k: "" for k in RESULT_COLUMNS if k not in record}, kwargs={}, val_acc_curve=[], train_acc_curve=[])
        (tmp_path / "runs" / record["run_id"] / "result.json").write_text(json.dumps(record))
    write_results_csv(tmp_path, plan)
    with open(tmp_path / "results.csv") as f:
        roles = {(row["run_id"], row["axis"]): row["role"] for row in csv.DictReader(f)}
    winner = next(r for r in plan if len(r.points) == 2)
    assert roles == {(first.run_id, "tune:cnn"): "tune", (winner.run_id, "tune:cnn"): "tune,main",
                     (winner.run_id, "width"): "tune,main"}
    saved = {r.run_id: json.loads((tmp_path / "runs" / r.run_id / "result.json").read_text()) for r in plan}
    assert saved[first.run_id]["roles"] == ["tune"] and saved[winner.run_id]["roles"] == ["tune", "main"]
    assert [p["axis"] for p in saved[winner.run_id]["points"]] == ["tune:cnn", "width"]


@pytest.mark.parametrize("short, long, verdict", [
    ("gain", "gain", "holds at both budgets"),
    ("gain", "loss", "reversed at the longer budget"),
    ("loss", "equal", "a loss at the study's budget, equal within ±1 point at 4x"),
    ("not resolved", "gain", "not resolved at the study's budget, a gain at 4x"),
    ("not resolved", "not resolved", "not resolved at the study's budget, not resolved at 4x"),
])
def test_the_budget_check_says_which_differences_hold(short, long, verdict):
    from lightning_cifar.study.report import budget_verdict
    from lightning_cifar.study.stats import Comparison, Judgement

    def said(word):
        return Judgement(Comparison(0.01, 0.0, 0.02, 0.5, 3, 3), word, 0.5, 0.5, 2)

    assert budget_verdict(said(short), said(long), 4) == verdict


def comparison_of(samples, p_floor=1 / 2000):
    """A Comparison with these bootstrap samples (its interval and two-sided p computed as the bootstrap does)."""
    from lightning_cifar.study.stats import Comparison

    samples = np.asarray(samples, dtype=float)
    low, high = np.percentile(samples, [2.5, 97.5])
    p = max(min(1.0, 2 * min((samples <= 0).mean(), (samples >= 0).mean())), p_floor)
    return Comparison(float(samples.mean()), float(low), float(high), float(p), 5, 5, p_floor, samples)


def test_the_words_follow_one_rule():
    from lightning_cifar.study.stats import EQUAL, GAIN, LOSS, UNRESOLVED, judge

    rng = np.random.default_rng(0)
    clear_gain = comparison_of(0.05 + 0.005 * rng.standard_normal(2000))     # +5 points, tight
    clear_loss = comparison_of(-0.03 + 0.005 * rng.standard_normal(2000))
    equal = comparison_of(0.001 + 0.002 * rng.standard_normal(2000))         # inside ±1 point, tight
    wide = comparison_of(-0.005 + 0.006 * rng.standard_normal(2000))         # crosses 0 and -1 point
    words = [j.word for j in judge([clear_gain, clear_loss, equal, wide])]
    assert words == [GAIN, LOSS, EQUAL, UNRESOLVED]
    # Holm: a difference that a single test would call (p about 0.03) is not resolved in a family of four such tests.
    edge = [comparison_of(0.006 + 0.0028 * rng.standard_normal(2000)) for _ in range(4)]
    assert all(0.01 < c.p < 0.05 for c in edge)
    assert [j.word for j in judge(edge[:1])] == [GAIN]
    assert {j.word for j in judge(edge)} == {UNRESOLVED}
    # Equivalence: the two one-sided tests use the margin, not the interval's crossing of zero.
    assert equal.equivalence_p(0.01) < 0.05 and wide.equivalence_p(0.01) > 0.05


def test_a_step_change_is_the_difference_of_two_differences():
    from lightning_cifar.study.stats import paired_contrast

    rng = np.random.default_rng(3)
    easy = rng.random(4000)
    a, b, c = ((easy < level) ^ (rng.random((3, 4000)) < 0.01) for level in (0.5, 0.6, 0.65))
    change = paired_contrast([c, b, a], [1, -2, 1])
    assert change.value == pytest.approx((c.mean() - b.mean()) - (b.mean() - a.mean()), abs=1e-6)
    assert change.low < change.value < change.high and change.high < 0  # +10 then +5 points: the step shrinks
    # Two groups: the same numbers as the paired bootstrap of their difference.
    assert paired_contrast([c, a], [1, -1]) == paired_bootstrap(c, a)


def test_the_notebook_anchor_is_read_against_one_runs_prediction_interval():
    from lightning_cifar.study.report import anchor_reading
    from lightning_cifar.study.stats import prediction_half_width

    ours = [0.4597, 0.4674, 0.4649]  # three seeds; the notebook reported 0.4728 from one run
    half = prediction_half_width(ours)
    assert half == pytest.approx(scipy_stats.t.ppf(0.975, 2) * np.std(ours, ddof=1) * math.sqrt(1 + 1 / 3))
    assert anchor_reading(ours, 0.4728) == "consistent: inside the prediction interval, above all 3 of our seeds"
    assert anchor_reading(ours, 0.4650) == "consistent: inside the prediction interval, within our seeds' range"
    assert anchor_reading(ours, 0.60) == "not consistent: above the prediction interval"


def test_a_quick_trial_sets_seeds_epochs_and_any_fit_setting_on_the_command_line(tmp_path, tiny_cifar, cli):
    study = tiny_study(tmp_path / "not_here")  # the data folder comes from the command line, as for fit
    config = write_study(tmp_path / "study.yaml", study)
    out = tmp_path / "out"
    cli(["study", "-c", str(config), "--out", str(out), "--seeds", "3", "--epochs", "2", "--model.lr=0.1",
         "--data.batch_size=16", f"--data.data_dir={tiny_cifar}"], tmp_path)
    assert len(results_by_run(out)) == 4  # 3 CNN points and the MLP, one seed each
    results = [json.loads(p.read_text()) for p in out.glob("runs/*/result.json")]
    assert len(results) == 4 and {r["seed"] for r in results} == {3}
    for r in results:
        assert r["epochs"] == 2 and "--model.lr=0.1" in r["fit_arguments"] and "--data.batch_size=16" in r["fit_arguments"]
    report = (out / "report.md").read_text()
    assert "- seeds per point: 1 (seed 3);" in report
    assert "--seeds 3 --epochs 2 --model.lr=0.1 --data.batch_size=16" in report  # how to reproduce it
    line = one_line_error(cli(["study", "-c", str(config), "--out", str(out), "--modle.lr=0.1"], tmp_path, check=False))
    assert "--modle.lr=0.1: not an option of `lightning-cifar study`" in line
    line = one_line_error(cli(["study", "-c", str(config), "--out", str(out), "--model.lrr=0.1"], tmp_path, check=False))
    assert "unknown key 'lrr' (did you mean 'lr'?)" in line


def test_the_dry_run_says_when_other_processes_slowed_its_estimate(tmp_path, tiny_cifar, cli):
    config = write_study(tmp_path / "study.yaml", tiny_study(tiny_cifar, seeds=[0]))
    args = ["study", "-c", str(config), "--out", str(tmp_path / "out"), "--dry-run"]
    with one_core_busy():
        busy = cli(args, tmp_path).stdout
    assert "4 runs; estimated" in busy and "measured while other processes kept" in busy
    assert not (tmp_path / "out" / "runs").exists()


def test_the_dry_run_of_a_finished_study_estimates_only_what_is_left(full_study, tmp_path, cli):
    folder, config, out, study = full_study
    printed = cli(["study", "-c", str(config), "--out", str(out), "--dry-run", "--threads", "1"], tmp_path).stdout
    rows = [line for line in printed.splitlines() if line.split()[:1] and "-s" in line.split()[0]]
    assert rows and all(line.rstrip().endswith("done") for line in rows)
    assert f"{len(rows)} runs, all done: nothing to run" in printed


def test_the_dry_run_calibrates_its_probe_by_the_seconds_finished_runs_took(full_study, tmp_path, cli):
    import shutil

    folder, config, finished, study = full_study
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    results = sorted(out.glob("runs/*/result.json"))
    left = next(p for p in results if json.loads(p.read_text())["roles"] == ["main"])
    left.unlink()  # one run to do
    for path in results:
        if path.exists():  # every finished run took 1,000 s: far longer than its probe's bare steps
            path.write_text(json.dumps(json.loads(path.read_text()) | {"train_time_s": 1000.0}))
    threads = torch.get_num_threads()
    printed = cli(["study", "-c", str(config), "--out", str(out), "--dry-run", "--threads", str(threads)],
                  tmp_path).stdout
    row = next(line for line in printed.splitlines() if line.startswith(left.parent.name))
    assert float(row.split()[-1]) > 100  # the tiny run's probe alone says about a second
    assert "finished runs at this thread count took against the same estimate" in printed
    assert f"({len(results) - 1} done, 1 to run)" in printed
