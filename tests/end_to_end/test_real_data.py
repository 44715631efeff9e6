"""Opt-in runs on the real CIFAR-10 (``pytest -m slow``); skipped when ../shared/cifar10 is absent."""

import pytest
import yaml

from tests.helpers.runs import REAL_CIFAR, REPO, run_cli, scalars

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (REAL_CIFAR / "cifar-10-batches-py").is_dir(), reason="real CIFAR-10 not found"),
]


def test_seed_mlp_reproduces_the_notebook(tmp_path):
    """The notebook's MLP 3072-128-64-32-10 reached 47.28 % after 20 epochs."""
    args = ["-c", str(REPO / "configs" / "mlp-seed.yaml"), f"--data.data_dir={REAL_CIFAR}",
            "--trainer.enable_progress_bar=false", "--seed_everything=0"]
    run_cli(["fit", *args], tmp_path, timeout=1800)
    run_cli(["test", *args, "--ckpt_path=last"], tmp_path)
    runs = sorted((tmp_path / "lightning_logs").iterdir(), key=lambda p: int(p.name.split("_")[1]))
    acc = scalars(runs[-1])["test/acc"][0]
    print(f"mlp_seed test accuracy after 20 epochs: {acc:.4f} (notebook: 0.4728)")
    assert acc >= 0.44
    assert yaml.safe_load((runs[0] / "config.yaml").read_text())["model"]["backbone"] == "mlp_seed"
