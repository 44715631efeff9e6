"""The benchmark scripts import from the package inside their functions (to start fast); a renamed or moved name
would only fail when someone runs the benchmark, hours later. Check every such import here."""

import ast
import importlib
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = sorted((REPO / "benchmarks").rglob("*.py"))


def package_imports(path: Path) -> list[tuple[str, str]]:
    tree = ast.parse(path.read_text(), str(path))
    return [(node.module, alias.name) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightning_cifar")
            for alias in node.names]


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_every_name_a_benchmark_imports_from_the_package_exists(path):
    for module, name in package_imports(path):
        assert hasattr(importlib.import_module(module), name), f"{path.name}: from {module} import {name}"


def test_the_scan_sees_the_imports_inside_functions():
    throughput = next(p for p in BENCHMARKS if p.name == "throughput.py")
    assert ("lightning_cifar.cli.precision", "default_precision") in package_imports(throughput)


SPEEDRUN_CONFIGS = ["fast-cpu-45s.yaml", "speedrun-cpu-90.yaml", "speedrun-cpu-94.yaml"]


@pytest.mark.parametrize("config", SPEEDRUN_CONFIGS)
def test_every_ablation_variant_changes_the_speedrun_config_and_still_builds(config):
    """A variant that leaves the config as it was would print a row that measures nothing, and one the model
    refuses (a kernel rule, an unknown option) would fail an hour into the ablation."""
    import importlib
    import runpy

    import yaml

    from lightning_cifar import Classifier

    variants = runpy.run_path(str(REPO / "benchmarks" / "speedrun_ablation.py"))

    base = yaml.safe_load((REPO / "configs" / config).read_text())
    for name in variants["VARIANTS"]:
        changed = variants["variant_config"](base, name)
        assert (changed == base) == (name == "full"), name
        Classifier(**changed["model"])
        for callback in changed.get("trainer", {}).get("callbacks") or []:
            module, _, cls = callback["class_path"].rpartition(".")
            getattr(importlib.import_module(module), cls)(**callback.get("init_args", {}))


def test_the_gpu_script_scores_our_94_config_once_after_its_last_epoch():
    """It compares whole-process times with airbench, which tests once: an earlier --from-epoch would add test
    passes to ours (each about 40 % of an epoch), a later one would score nothing."""
    import re

    import yaml

    script = (REPO / "benchmarks" / "gpu" / "run_checks.sh").read_text()
    call = re.search(r"time_to_accuracy\.py configs/speedrun-cpu-94\.yaml[^\n]*\n[^\n]*--from-epoch (\d+)", script)
    epochs = yaml.safe_load((REPO / "configs" / "speedrun-cpu-94.yaml").read_text())["trainer"]["max_epochs"]
    assert call is not None and int(call.group(1)) == epochs


def test_throughput_counts_the_flops_of_the_network_a_config_trains_defaults_included(tmp_path):
    """`--configs` turns img/s into GFLOP/s with this network: a config that names no backbone trains the
    model's default (with the config's keyword arguments), and a wrong network would misstate the share of
    the peak."""
    import inspect
    import runpy
    import sys

    from lightning_cifar import Classifier

    throughput = runpy.run_path(str(REPO / "benchmarks" / "throughput.py"))
    config = tmp_path / "no-backbone.yaml"
    config.write_text("model:\n  backbone_kwargs:\n    width_mult: 2.0\n")
    default = inspect.signature(Classifier).parameters["backbone"].default
    model = throughput["resolved_settings"]([sys.executable, "-m", "lightning_cifar", "fit", "-c", str(config)])["model"]
    assert (model["backbone"], model["backbone_kwargs"]) == (default, {"width_mult": 2.0})
    assert throughput["model_flops_per_image"](model) == throughput["training_flops_per_image"](default, {"width_mult": 2.0})


# -- benchmarks/vs_airbench.py: airbench94 itself, through a CPU shim ------------------------------------------


def test_the_airbench_table_is_read_as_the_package_prints_it(capsys):
    """airbench prints its results as a table; the comparison reads them from there, so the reader is checked
    against the package's own printer (a changed column would otherwise show up as a wrong row hours in)."""
    import sys

    utils = pytest.importorskip("airbench.utils", reason="needs the bench extra")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from airbench_cpu import parse_rows

    utils.print_columns(utils.logging_columns_list, is_head=True)
    utils.print_training_details({"run": 0, "epoch": 3, "train_loss": 0.51, "train_acc": 0.875, "val_acc": 0.9012,
                                  "total_time_seconds": 301.5}, is_final_entry=False)
    utils.print_training_details({"epoch": "eval", "tta_val_acc": 0.9401, "total_time_seconds": 1002.25},
                                 is_final_entry=True)
    rows = parse_rows(capsys.readouterr().out)
    assert rows == [
        {"run": 0, "epoch": 3, "train_loss": 0.51, "train_acc": 0.875, "val_acc": 0.9012, "tta_val_acc": None,
         "total_time_seconds": 301.5},
        {"run": None, "epoch": "eval", "train_loss": None, "train_acc": None, "val_acc": None, "tta_val_acc": 0.9401,
         "total_time_seconds": 1002.25},
    ]


@pytest.mark.parametrize("precision, dtype", [("bf16", "torch.bfloat16"), ("fp32", "torch.float32")])
def test_the_shim_runs_airbenchs_own_network_on_the_cpu_in_the_chosen_precision(precision, dtype):
    """In a process of its own: the shim changes torch for the whole process."""
    import subprocess
    import sys

    pytest.importorskip("airbench", reason="needs the bench extra")
    code = (f"import sys, time; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import torch, airbench_cpu\n"
            f"airbench_cpu.run_on_cpu({precision!r}); import airbench\n"
            "net = airbench.make_net94(); x = torch.randn(4, 3, 32, 32).cuda().half()\n"
            "start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)\n"
            "start.record(); out = net(x); out.float().sum().backward(); time.sleep(0.01); end.record()\n"
            "torch.cuda.synchronize()\n"
            "norms = {m.weight.dtype for m in net.modules() if type(m).__name__ == 'BatchNorm'}\n"
            "print(out.dtype, out.device, tuple(out.shape), norms == {torch.float32}, start.elapsed_time(end) >= 10)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [dtype, "cpu", "(4,", "10)", "True", "True"]


def test_the_side_by_side_table_keeps_versions_of_ours_apart_and_counts_the_test_pass_that_finds_the_target():
    """Two versions of ours share airbench's runs in one file; each gets its own row and ratios, and its time to
    an accuracy includes the test pass that measured it (airbench's includes its own)."""
    import runpy

    table = runpy.run_path(str(REPO / "benchmarks" / "vs_airbench.py"))["table"]
    airbench = {"who": "airbench94", "precision": "bf16", "seed": 0, "tta_acc": 0.93, "airbench_timer_s": 500.0,
                "train_epochs": 9.9, "epoch_s": [50.0]}

    def ours(label: str, accs: list[float]) -> dict:
        epochs = [{"epoch": i + 1, "test_acc": acc, "train_wall_s": 100.0 * (i + 1), "eval_s": 10.0 * (i + 1)}
                  for i, acc in enumerate(accs)]
        return {"who": "ours", "precision": label, "seed": 0, "epochs": epochs, "epoch_s": [100.0],
                "final_acc": accs[-1], "time_s": 100.0 * len(accs) + 10.0}

    text = table([airbench, ours("long", [0.92, 0.935, 0.941]), ours("short", [0.925, 0.931])], 0.94)
    assert "| ours | long | 1 | 100.0 | 3.0 (1 of 1) | 310 | 0.9410 | 310 |" in text
    assert "| ours | short | 1 | 100.0 | not reached (0 of 1) | not reached | 0.9310 | 210 |" in text
    assert "ours (long) at airbench94's final accuracy (0.9300): 210 s (1 of 1 seeds reach it), 0.42x" in text
    assert ("ours (short) at airbench94's final accuracy (0.9300): 210 s (1 of 1 seeds reach it), 0.42x its whole"
            " run") in text
    assert "upper bound" not in text  # both were tested from their first epoch, below airbench's accuracy
    # tested from a later epoch only, the first test pass may already be past airbench's accuracy
    late = table([airbench, ours("late", [0.935, 0.941])], 0.94)
    assert ("110 s (1 of 1 seeds reach it), 0.22x its whole run; an upper bound: 1 of them already at their first test"
            " pass (epoch 1)") in late
    assert "ours (short) / airbench94 (bf16): whole run 0.42x, seconds per epoch 2.00x" in text


def test_the_side_by_side_runs_ours_alone_against_the_airbench_runs_its_file_holds(tmp_path, monkeypatch, capsys):
    """--skip-airbench: ours only, each record dated, the table against the airbench runs already in --json."""
    import runpy

    main = runpy.run_path(str(REPO / "benchmarks" / "vs_airbench.py"))["main"]
    airbench = {"who": "airbench94", "precision": "fp32", "seed": 0, "tta_acc": 0.94, "airbench_timer_s": 500.0,
                "train_epochs": 9.9, "epoch_s": [50.0]}
    runs = tmp_path / "runs.jsonl"
    runs.write_text(json.dumps(airbench) + "\n")
    ran = []

    def fake_ours(seed, args):
        ran.append(("ours", seed, args.extra))
        return {"who": "ours", "precision": args.label, "seed": seed, "epoch_s": [60.0], "final_acc": 0.941,
                "time_s": 450.0, "epochs": [{"epoch": 9, "test_acc": 0.941, "train_wall_s": 440.0, "eval_s": 10.0}]}

    main.__globals__["run_ours"] = fake_ours
    main.__globals__["run_airbench"] = lambda *a: pytest.fail("--skip-airbench ran airbench")
    argv = ["vs_airbench.py", "--seeds", "0", "1", "--json", str(runs), "--resume", "--skip-airbench",
            "--airbench-precision", "fp32", "--label", "9 epochs", "--", "--trainer.max_epochs=9"]
    monkeypatch.setattr(sys, "argv", argv)
    main()
    assert ran == [("ours", 0, ["--trainer.max_epochs=9"]), ("ours", 1, ["--trainer.max_epochs=9"])]
    records = [json.loads(line) for line in runs.read_text().splitlines()]
    assert [r["who"] for r in records] == ["airbench94", "ours", "ours"] and all("finished" in r for r in records[1:])
    assert "ours (9 epochs) / airbench94 (fp32): whole run 0.90x" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", [*argv[:-2], "--skip-ours"])
    with pytest.raises(SystemExit):
        main()


@pytest.mark.parametrize("precision", ["bf16", "fp32", "autocast"])
def test_the_profiles_airbench_child_is_python_in_each_precision(precision):
    """The child's code is a format template (its own braces doubled): a slip there fails only after the
    airbench side's minutes of set-up, so the template is formatted and compiled here."""
    import runpy

    template = runpy.run_path(str(REPO / "benchmarks" / "profile_vs_airbench.py"))["CHILD_AIRBENCH"]
    code = template.format(here="/benchmarks", data="/data", images=2048, precision=precision)
    compile(code, "child", "exec")
    assert f"run_on_cpu({precision!r})" in code
    assert f"train94_options({precision!r}, airbench)" in code  # airbench_cpu's autocast network where asked


def test_ours_tested_after_its_last_epoch_only_still_gets_seconds_per_epoch():
    """--from-epoch at the last epoch leaves no two test passes to subtract: the table printed nan and a nan
    ratio (seen on a 9-epoch run); its training time over its epochs is the figure there."""
    import runpy

    table = runpy.run_path(str(REPO / "benchmarks" / "vs_airbench.py"))["table"]
    airbench = {"who": "airbench94", "precision": "fp32", "seed": 0, "tta_acc": 0.9423, "airbench_timer_s": 3292.0,
                "train_epochs": 9.9, "epoch_s": [300.0, 320.0, 310.0]}
    ours = {"who": "ours", "precision": "9 epochs", "seed": 0, "epoch_s": [], "final_acc": 0.9404, "time_s": 3505.0,
            "epochs": [{"epoch": 9, "test_acc": 0.9404, "train_wall_s": 3363.0, "eval_s": 138.5}]}
    text = table([airbench, ours], 0.94)
    assert "nan" not in text
    assert "| ours | 9 epochs | 1 | 373.7 | 9.0 (1 of 1) | 3,502 | 0.9404 | 3,505 |" in text
    assert "ours (9 epochs) / airbench94 (fp32): whole run 1.06x, seconds per epoch 1.21x" in text


def test_loop_variants_reads_settings_as_yaml_and_refuses_one_without_a_value():
    """A variant timed with a setting the user mistyped would silently time the config as written."""
    import runpy

    script = runpy.run_path(str(REPO / "benchmarks" / "loop_variants.py"))
    assert script["parse_change"]("data.batch_size=1024") == ("data.batch_size", 1024)
    assert script["parse_change"]("model.backbone_kwargs.pool_position=first_conv")[1] == "first_conv"
    with pytest.raises(SystemExit, match="'data.batch_size': expected KEY=VALUE"):
        script["parse_change"]("data.batch_size")


def test_muon_precision_counts_an_epoch_as_the_config_trains_it():
    """Its s-per-epoch column multiplies a step by these: the 90 % config trains 0.8 of each epoch's batches, and a
    config without a batch size trains at the data module's default."""
    import runpy

    import yaml

    steps_per_epoch = runpy.run_path(str(REPO / "benchmarks" / "muon_precision.py"))["steps_per_epoch"]
    ninety = yaml.safe_load((REPO / "configs" / "speedrun-cpu-90.yaml").read_text())
    assert steps_per_epoch(ninety) == (500, 80)
    assert steps_per_epoch({"data": {"batch_size": 500}, "trainer": {"limit_train_batches": 30}}) == (500, 30)
    assert steps_per_epoch({"model": {"optimizer": "muon"}}) == (256, 196)


def test_airbench_gets_the_autocast_network_in_autocast_only():
    """The side by side and the profile both ask airbench_cpu what train94 needs for a precision."""
    import sys

    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    from airbench_cpu import train94_options

    class FakeAirbench:
        @staticmethod
        def make_net94():
            return torch.nn.Linear(2, 2)

    assert train94_options("bf16", FakeAirbench) == {} and train94_options("fp32", FakeAirbench) == {}
    net = train94_options("autocast", FakeAirbench)["make_net"]()
    with torch.no_grad():
        assert net(torch.randn(1, 2)).dtype == torch.bfloat16  # its forward pass runs under bfloat16 autocast


def test_the_tta_view_sets_score_the_packages_own_modes_exactly():
    """tta_views.py compares view sets on logits it computes itself: its rows named after the package's modes must
    be the predictions `test` makes with that `tta`, or the row every other set is compared with measures something
    else (a shift the wrong way, a weight off)."""
    import runpy

    import torch

    from lightning_cifar.training.classifier import Classifier, evaluation_logits

    script = runpy.run_path(str(REPO / "benchmarks" / "tta_views.py"))
    torch.manual_seed(0)
    model = Classifier(backbone="cnn_base").eval()
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    logits = script["view_logits"](model, images, batch=40)
    x = images.float() / 255
    for mode, label in (("none", "none"), ("mirror", "mirror"), ("mirror_shift", script["PACKAGE_MIRROR_SHIFT"])):
        views = script["VIEW_SETS"][label]
        mean = sum(w * logits[script["VIEWS"].index(view)] for view, w in views.items())
        torch.testing.assert_close(mean, evaluation_logits(model, x, mode), rtol=1e-4, atol=1e-5)
    assert abs(sum(w for views in script["VIEW_SETS"].values() for w in views.values())
               - len(script["VIEW_SETS"])) < 1e-9  # every set's weights sum to 1
    moved = script["shifted"](x, 1, -2)
    torch.testing.assert_close(moved[..., 1:, :-2], x[..., :-1, 2:])  # content one row down, two columns left


def _ablation_file(path, variant, changes, runs):
    path.write_text(json.dumps({"config": "configs/speedrun-cpu-94.yaml", "changes": changes, "target": 0.94,
                                "score": "val", "results": {variant: [
                                    {"seed": seed, "final_val_acc": val, "final_test_acc": test}
                                    for seed, val, test in runs]}}))
    return str(path)


def test_paired_ablation_pairs_seeds_across_files_and_refuses_mixed_sides(tmp_path):
    import subprocess

    script = str(REPO / "benchmarks" / "paired_ablation.py")
    base = [_ablation_file(tmp_path / "b0.json", "full", ["trainer.max_epochs=9"], [(0, 0.9376, 0.9384)]),
            _ablation_file(tmp_path / "b12.json", "full", ["trainer.max_epochs=9"], [(1, 0.9380, 0.9342),
                                                                                    (2, 0.9368, 0.9359)])]
    changed = ["trainer.max_epochs=9", "model.warmup=0.23"]
    tried = [(0, 0.9422, 0.9361), (1, 0.9374, 0.9383), (3, 0.95, 0.95)]
    cand = [_ablation_file(tmp_path / f"c{run[0]}.json", "switch-lookahead", changed, [run]) for run in tried]
    out = subprocess.run([sys.executable, script, "--baseline", *base, "--candidate", *cand],
                         capture_output=True, text=True, check=True).stdout
    assert "paired seeds: [0, 1] (unpaired, left out: [2, 3])" in out
    assert "| 0 | 93.76 % | 94.22 % | +0.46 | 93.84 % | 93.61 % | -0.23 |" in out
    assert "| mean ± sd | 93.78 % ± 0.03 | 93.98 % ± 0.34 | +0.20 ± 0.37 |" in out
    assert "validation: candidate − baseline +0.20 points over 2 pairs, paired t-test p = " in out

    mixed = subprocess.run([sys.executable, script, "--baseline", base[1], cand[0], "--candidate", cand[1]],
                           capture_output=True, text=True)
    assert mixed.returncode != 0 and "--baseline: the files hold 2 different variants or settings" in mixed.stderr


def test_filter_norms_measures_each_filter_bank_against_its_untrained_self(tmp_path):
    """filter_norms.py says how far Muon's filters grew: a bank scaled by 3 must read 3x its initial norm, one left
    alone 1x, and the frozen whitening filters (which no optimizer moves) are left out."""
    import subprocess

    import pytorch_lightning
    import torch

    from lightning_cifar.training.classifier import Classifier

    settings = {"backbone": "convpool", "backbone_kwargs": {"widths": [8, 16], "kernels": [3, 3], "whiten": 3},
                "optimizer": "muon", "muon_lr": 0.2}
    torch.manual_seed(0)
    model = Classifier(**settings)
    state = model.state_dict()
    banks = [name for name, p in model.named_parameters() if p.ndim == 4 and p.requires_grad]
    state[banks[0]] = state[banks[0]] * 3
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": pytorch_lightning.__version__}, path)
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "filter_norms.py"), str(path)],
                         capture_output=True, text=True, check=True).stdout
    norms = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(norms) == set(banks) and not any("whiten" in name for name in norms)
    for name in banks:
        now, then = (float(x) for x in norms[name].replace(")", "").split(": ")[1].split(" (at initialisation "))
        assert now == pytest.approx(then * (3 if name == banks[0] else 1), abs=0.011)
    missing = subprocess.run([sys.executable, str(REPO / "benchmarks" / "filter_norms.py"), str(tmp_path / "nope")],
                             capture_output=True, text=True)
    assert missing.returncode != 0 and missing.stderr.strip().endswith("nope: no such checkpoint file")
