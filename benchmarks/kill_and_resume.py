"""Kill a real training run mid-epoch with SIGKILL, resume it with --ckpt_path=last, compare.

    python benchmarks/kill_and_resume.py --data-dir ../shared/cifar10 [--epochs 4] [--kill-in-epoch 2]

Runs the same `lightning-cifar fit` twice in fresh folders: once uninterrupted, once
killed part-way through epoch ``--kill-in-epoch`` (counted from 0) and then resumed
with `--ckpt_path=last`. Prints every epoch's val/acc of both and the largest weight
difference of their final checkpoints.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from time_to_accuracy import val_accuracies as val_acc  # noqa: E402  (one reader of a run's val/acc)


def fit_command(data_dir: str, epochs: int, *extra: str) -> list[str]:
    exe = shutil.which("lightning-cifar") or "lightning-cifar"
    return [exe, "fit", "-c", str(Path(__file__).parents[1] / "configs" / "cnn-base.yaml"),
            f"--data.data_dir={data_dir}", f"--trainer.max_epochs={epochs}", "--trainer.enable_progress_bar=false",
            "--seed_everything=7", *extra]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/cifar10")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--kill-in-epoch", type=int, default=2)
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    root = Path(tempfile.mkdtemp(prefix="kill_and_resume_"))
    whole, broken = root / "uninterrupted", root / "killed"
    whole.mkdir()
    broken.mkdir()

    started = time.perf_counter()
    subprocess.run(fit_command(data_dir, args.epochs), cwd=whole, check=True, capture_output=True)
    epoch_s = (time.perf_counter() - started) / args.epochs

    proc = subprocess.Popen(fit_command(data_dir, args.epochs), cwd=broken, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = broken / "lightning_logs/version_0/checkpoints/last.ckpt"
    while proc.poll() is None:
        if last.exists() and torch.load(last, weights_only=True)["epoch"] == args.kill_in_epoch - 1:
            time.sleep(0.4 * epoch_s)  # well inside the next epoch
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(last, weights_only=True)
    print(f"killed during epoch {args.kill_in_epoch}; last.ckpt holds epoch {killed_at['epoch']}, "
          f"step {killed_at['global_step']}")
    subprocess.run(fit_command(data_dir, args.epochs, "--ckpt_path=last"), cwd=broken, check=True,
                   capture_output=True)

    a = torch.load(whole / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    b = torch.load(broken / "lightning_logs/version_1/checkpoints/last.ckpt", weights_only=True)
    diff = max(float((a["state_dict"][k].float() - b["state_dict"][k].float()).abs().max()) for k in a["state_dict"])
    print(f"uninterrupted val/acc per epoch: {val_acc(whole / 'lightning_logs/version_0')}")
    print(f"killed run before the kill:      {val_acc(broken / 'lightning_logs/version_0')}")
    print(f"resumed run:                     {val_acc(broken / 'lightning_logs/version_1')}")
    print(f"final epoch {a['epoch']} vs {b['epoch']}, global step {a['global_step']} vs {b['global_step']}, "
          f"largest weight difference {diff:.3g}")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
