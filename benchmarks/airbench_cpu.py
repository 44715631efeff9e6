"""airbench94 (the PyPI package ``airbench`` 0.1.8, its code unmodified) trained on this machine's CPU, one seed.

    python benchmarks/airbench_cpu.py --seed 0 --precision bf16 --data-dir ../shared/cifar10

airbench is written for one CUDA GPU in fp16. The shim below is what makes it run on a CPU, and nothing else
changes: its network, recipe, data loader, timers and test-time augmentation are the package's own.

- ``.cuda()`` of modules and tensors returns them where they are; ``torch.load`` onto "GPU 0" loads onto the CPU.
- ``.half()`` gives ``--precision``'s dtype: ``bf16`` (bfloat16 weights and activations, the CPU's nearest to the
  GPU's pure fp16; airbench's batch norms stay float32, as on the GPU), ``fp32`` (float32 throughout), or
  ``autocast`` (float32 weights, the network's forward pass under ``torch.autocast("cpu", torch.bfloat16)``, as
  our runs train; passed to ``train94`` as its ``make_net`` argument).
- ``torch.cuda.Event`` is a wall-clock timer and ``torch.cuda.synchronize`` does nothing: CPU operations have
  finished when they return. airbench's own timer therefore measures what it measures on a GPU: the whitening
  set-up, the training epochs and the final TTA evaluation, not its per-epoch test passes.

The data: ``CifarLoader("cifar10")`` reads ``cifar10/`` in the working folder and caches tensors there; the script
runs in a temporary folder whose ``cifar10/cifar-10-batches-py`` links to ``--data-dir``'s (torchvision checks the
files' MD5 sums and downloads nothing). Prints one JSON line: every epoch's row, the final TTA accuracy, airbench's
timer and the whole process's wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

LAUNCHED = time.time()

import torch  # noqa: E402  (after LAUNCHED: import time is part of the whole process's wall time)

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "autocast": torch.float32}


class WallClockEvent:
    """``torch.cuda.Event(enable_timing=True)`` on the CPU: ``elapsed_time`` in milliseconds, as CUDA's."""

    def __init__(self, enable_timing: bool = False, **_: object) -> None:
        self.at = None

    def record(self, stream: object = None) -> None:
        self.at = time.perf_counter()

    def elapsed_time(self, end: "WallClockEvent") -> float:
        return 1e3 * (end.at - self.at)


def run_on_cpu(precision: str) -> None:
    """The shim: airbench's CUDA and fp16 calls mean the CPU and ``precision``'s dtype."""
    dtype = DTYPES[precision]
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.half = lambda self: self.to(dtype)
    torch.Tensor.half = lambda self, *a, **k: self.to(dtype)
    torch.cuda.Event = WallClockEvent
    torch.cuda.synchronize = lambda *a, **k: None
    load = torch.load

    def load_on_cpu(*args, map_location=None, **kwargs):
        return load(*args, map_location="cpu", **kwargs)

    torch.load = load_on_cpu


@contextlib.contextmanager
def airbench_data_folder(data_dir: str) -> Iterator[None]:
    """The working folder, while inside, is a temporary one whose ``cifar10/cifar-10-batches-py`` links to
    ``data_dir``'s: where ``CifarLoader("cifar10")`` reads (and caches its tensors)."""
    batches = Path(data_dir).resolve() / "cifar-10-batches-py"
    if not batches.is_dir():
        raise SystemExit(f"--data-dir={data_dir}: no cifar-10-batches-py/ there")
    before = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="airbench-cpu-") as tmp:
        (Path(tmp) / "cifar10").mkdir()
        (Path(tmp) / "cifar10" / "cifar-10-batches-py").symlink_to(batches)
        os.chdir(tmp)
        try:
            yield
        finally:
            os.chdir(before)


def autocast_net(make_net):
    """airbench's network whose forward pass (training and test) runs under bfloat16 autocast, as ours trains.
    Only the forward pass: around the whole run, autocast also took the whitening layer's patch covariance to
    bfloat16, whose eigenvalues then went negative and the weights NaN (tried: 10 % accuracy)."""

    def make():
        net = make_net()
        forward = net.forward

        def forward_under_autocast(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return forward(x)

        net.forward = forward_under_autocast
        return net

    return make


def train94_options(precision: str, airbench) -> dict:
    """``train94``'s keyword arguments for ``precision``: the autocast network for ``autocast``, nothing else."""
    return {"make_net": autocast_net(airbench.make_net94)} if precision == "autocast" else {}


ROW = re.compile(r"^\|(.*)\|$")


def parse_rows(printed: str) -> list[dict]:
    """airbench's printed table (run, epoch, train_loss, train_acc, val_acc, tta_val_acc, total_time_seconds)."""
    columns = ["run", "epoch", "train_loss", "train_acc", "val_acc", "tta_val_acc", "total_time_seconds"]
    rows = []
    for line in printed.splitlines():
        match = ROW.match(line.strip())
        if not match:
            continue
        cells = [c.strip() for c in match.group(1).split("|")]
        if len(cells) != len(columns) or cells[1] == "epoch":
            continue
        row = {}
        for name, cell in zip(columns, cells):
            try:
                row[name] = float(cell) if "." in cell else int(cell)
            except ValueError:
                row[name] = cell or None
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "cifar10"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--epochs", type=float, default=None, help="airbench's train_epochs (default: its 9.9);"
                        " less only to try the script out")
    args = parser.parse_args()
    try:
        import airbench
    except ImportError:
        raise SystemExit("needs the airbench package: pip install 'lightning-cifar[bench]'") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    run_on_cpu(args.precision)
    torch.manual_seed(args.seed)
    printed = io.StringIO()
    with airbench_data_folder(args.data_dir):
        options = train94_options(args.precision, airbench)
        if args.epochs is not None:
            options["epochs"] = args.epochs
        with contextlib.redirect_stdout(printed):
            airbench.train94(run=0, verbose=True, **options)
    rows = parse_rows(printed.getvalue())
    final = next(r for r in rows if r["epoch"] == "eval")
    print(json.dumps({
        "who": "airbench94", "package": f"airbench {importlib.metadata.version('airbench')}",
        "precision": args.precision, "seed": args.seed, "train_epochs": args.epochs or 9.9,
        "threads": torch.get_num_threads(),
        "epochs": [r for r in rows if isinstance(r["epoch"], int)],
        "tta_acc": final["tta_val_acc"], "airbench_timer_s": final["total_time_seconds"],
        "process_wall_s": time.time() - LAUNCHED,
    }), flush=True)


if __name__ == "__main__":
    sys.exit(main())
