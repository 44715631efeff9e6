"""The benchmark scripts import from the package inside their functions (to start fast); a renamed or moved name
would only fail when someone runs the benchmark, hours later. Check every such import here."""

import ast
import importlib
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
    assert ("lightning_cifar.cli.lightning_cli", "default_precision") in package_imports(throughput)


SPEEDRUN_CONFIGS = ["fast-cpu-45s.yaml", "speedrun-cpu-90.yaml", "speedrun-cpu-94.yaml"]


@pytest.mark.parametrize("config", SPEEDRUN_CONFIGS)
def test_every_ablation_variant_changes_the_speedrun_config_and_still_builds(config):
    """A variant that leaves the config as it was would print a row that measures nothing, and one the model
    refuses (a kernel rule, an unknown option) would fail an hour into the ablation."""
    import runpy

    import yaml

    from lightning_cifar import Classifier

    variants = runpy.run_path(str(REPO / "benchmarks" / "speedrun_ablation.py"))

    base = yaml.safe_load((REPO / "configs" / config).read_text())
    for name in variants["VARIANTS"]:
        changed = variants["variant_config"](base, name)
        assert (changed == base) == (name == "full"), name
        Classifier(**changed["model"])


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
