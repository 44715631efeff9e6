"""Peak memory of reading hostile files: the predict-folder and batch-file cases of docs/reliability.md.

    python benchmarks/hostile_input_memory.py                      # this checkout
    python benchmarks/hostile_input_memory.py --code /path/to/an/older/checkout

Each case runs in a fresh Python process that imports only what reading the files needs; the
figure is that process's peak resident memory minus the same process's peak after its imports,
so it is what reading the file cost. Memory, unlike time, does not depend on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

READ_FOLDER = """
import resource, sys, time
from pathlib import Path
from lightning_cifar.data.image_folder import load_image_folder
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
try:
    found = load_image_folder(Path(sys.argv[1]))
    outcome = f"{len(found.files)} read, {len(found.skipped)} skipped" + (f" ({found.skipped[0][1]})" if found.skipped else "")
except Exception as exc:
    outcome = f"{type(exc).__name__}: {str(exc)[:120]}"
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, round(time.perf_counter() - t, 2), outcome, sep="\\t")
"""
READ_BATCHES = """
import resource, sys, time
from lightning_cifar.data.datamodule import UnverifiedCIFAR10
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
try:
    ds = UnverifiedCIFAR10(sys.argv[1], train=True)
    outcome = f"loaded {len(ds.data):,} training images"
except Exception as exc:
    outcome = f"refused: {str(exc).split(': ', 1)[-1][:120]}"
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, round(time.perf_counter() - t, 2), outcome, sep="\\t")
"""


def png(path: Path, width: int, height: int, row: bytes) -> None:
    """An 8-bit RGB PNG whose every row is ``row``, compressed as a stream (never all in memory)."""
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    packer, parts = zlib.compressobj(9), []
    for _ in range(height):
        parts.append(packer.compress(b"\x00" + row))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


class Reconstruct:
    def __init__(self, shape, state=None):
        self.shape, self.state = shape, state

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct
        import numpy as np

        return (_reconstruct, (np.ndarray, self.shape, b"B")) + ((self.state,) if self.state is not None else ())


def batch_folder(root: Path, data, images: int = 1) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from cifar_files import write_tiny_cifar

    write_tiny_cifar(root)
    (root / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps({"data": data, "labels": [0] * images}, protocol=2))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", default=str(REPO), help="checkout whose lightning_cifar to measure")
    parser.add_argument("--json", help="append the results as JSON lines to this file")
    args = parser.parse_args()
    import numpy as np

    env = {**os.environ, "PYTHONPATH": args.code, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = []
        line = tmp / "line"
        line.mkdir()
        png(line / "line.png", 1_000_000, 1, b"\x00\xff\x00" * 1_000_000)
        cases.append(("predict: a 1 x 1,000,000 PNG", READ_FOLDER, line))
        square = tmp / "square"
        square.mkdir()
        png(square / "square.png", 20_000, 20_000, b"\x80" * 60_000)
        cases.append(("predict: a 20,000 x 20,000 one-colour PNG", READ_FOLDER, square))
        cases.append(("batch file: 200,000 x 3,072 array, no bytes", READ_BATCHES,
                      batch_folder(tmp / "nobytes", Reconstruct((200_000, 3072)), images=200_000)))
        cases.append(("batch file: object array of 2e8 entries", READ_BATCHES,
                      batch_folder(tmp / "objects", Reconstruct((0,), (1, (200_000_000,), np.dtype("O"), False, [])))))
        print(f"code: {args.code}")
        print(f"{'case':<46} {'file':>9} {'peak MiB':>9} {'s':>6}  outcome")
        for name, script, folder in cases:
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name in ("line.png", "square.png", "data_batch_1"))
            # cwd: not this checkout, whose folder `python -c` would put first on sys.path
            proc = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, env=env, cwd=tmp,
                                  timeout=600)
            if proc.returncode != 0 or "\t" not in proc.stdout:
                peak, seconds, outcome = None, None, f"crashed (exit {proc.returncode}): {proc.stderr.strip()[-150:]}"
            else:
                base, top, seconds, outcome = proc.stdout.strip().split("\t")
                peak, seconds = (int(top) - int(base)) / 1024, float(seconds)
            shown = f"{peak:9.0f}" if peak is not None else f"{'–':>9}"
            print(f"{name:<46} {size / 1024:7.0f}KB {shown} {seconds if seconds is not None else '–':>6}  {outcome}")
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({"code": args.code, "case": name, "file_bytes": size, "peak_mib": peak,
                                        "seconds": seconds, "outcome": outcome}) + "\n")


if __name__ == "__main__":
    main()
