"""Peak memory and time of the round-three hostile inputs (docs/reliability.md, cases 84 to 89 and 100), whole
commands.

    python benchmarks/hostile_input_round3.py                                   # this checkout
    python benchmarks/hostile_input_round3.py --code /path/to/an/older/checkout \
        --json benchmarks/hostile_input_round3.jsonl

Each case runs ``python -m lightning_cifar ...`` in a fresh process, started by a small wrapper that reports the
peak resident memory of that process (``RUSAGE_CHILDREN``) and its wall time; a case still running after
``--deadline`` seconds is killed and reported as such (the hangs of the code before the fix). Memory does not
depend on what else runs on the machine; time does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WRAPPER = """
import resource, subprocess, sys, time
started = time.perf_counter()
try:
    proc = subprocess.run(sys.argv[2:], capture_output=True, text=True, timeout=float(sys.argv[1]))
    lines = [l for l in (proc.stderr + proc.stdout).splitlines() if l.strip()]
    outcome = f"exit {proc.returncode}: " + (lines[-1][:150] if lines else "")
except subprocess.TimeoutExpired:
    outcome = f"still running after {sys.argv[1]} s: killed"
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, round(time.perf_counter() - started, 1), outcome,
      sep="\\t")
"""


def shared_lists(levels: int) -> list:
    value: list = [0]
    for _ in range(levels):
        value = [value, value]
    return value


def nested(depth: int) -> list:
    value: list = [0]
    for _ in range(depth):
        value = [value]
    return value


def alias_bomb(indent: str, levels: int = 9) -> list[str]:
    lines = [f'{indent}a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    return lines + [f"{indent}a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels + 1)]


def make_cases(tmp: Path) -> list[tuple[str, Path, list[str]]]:
    """(case, the file it reads, the command's arguments), files written under ``tmp``."""
    import torch
    from PIL import Image

    sys.path.insert(0, str(REPO))
    from tests.helpers.cifar_files import write_tiny_cifar
    from tests.helpers.studies import tiny_study, write_study

    data = write_tiny_cifar(tmp / "data")
    base = {"state_dict": {"backbone.w": torch.zeros(2)}, "epoch": 0, "global_step": 1,
            "pytorch-lightning_version": "2.6.0",
            "hyper_parameters": {"backbone": "mlp_net", "backbone_kwargs": {"hidden": [4]}, "normalize": True}}
    data_args = [f"--data.data_dir={data}", "--data.verify=false", "--data.download=false", "--data.val_split=40"]
    cases = []
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    for name, value in (("shared lists, 2^60 paths", shared_lists(60)), ("a list 5,000 levels deep", nested(5000))):
        path = tmp / f"{len(cases)}.ckpt"
        torch.save({**base, "hyper_parameters": {**base["hyper_parameters"], "x": value}}, path)
        cases.append((f"test: checkpoint, {name}", path, ["test", *data_args, f"--ckpt_path={path}"]))
    sys.setrecursionlimit(limit)
    plain = tmp / "plain.ckpt"
    torch.save({**base, "hyper_parameters": {**base["hyper_parameters"], "note": "x" * 500_000_000}}, plain)
    deflated = tmp / "deflated.ckpt"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as target:
        for record in source.infolist():
            target.writestr(record.filename, source.read(record.filename))
    plain.unlink()
    cases.append(("test: checkpoint, 500 MB string DEFLATE-compressed", deflated,
                  ["test", *data_args, f"--ckpt_path={deflated}"]))
    config = tmp / "bomb.yaml"
    config.write_text("\n".join(["model:", "  backbone_kwargs:", *alias_bomb("    ")]) + "\n")
    cases.append(("fit -c: YAML alias bomb", config, ["fit", "-c", str(config), *data_args]))
    # The anchors defined among the notes, the bomb in an axis's values: where the code before the fix walked it.
    study = write_study(tmp / "study.yaml", {k: v for k, v in tiny_study(data).items() if k != "axes"})
    anchors = [line.replace(f"a{i}: &", "- &", 1) for i, line in enumerate(alias_bomb("  "))]
    study.write_text(study.read_text() + "\n".join(["notes:", *anchors, "axes:", "  - {name: bomb, kind: width,"
                                                     " param: width_mult, values: *a9}"]) + "\n")
    cases.append(("study --dry-run: YAML alias bomb", study, ["study", "-c", str(study), "--out", str(tmp / "out"),
                                                               "--dry-run"]))
    # predict needs a checkpoint it can load: a real one, one step of the tiny MLP
    subprocess.run([sys.executable, "-m", "lightning_cifar", "fit", *data_args, "--model.backbone=mlp_net",
                    '--model.backbone_kwargs={"hidden": [4]}', "--trainer.max_steps=1", "--trainer.precision=32-true",
                    f"--trainer.default_root_dir={tmp / 'run'}"], capture_output=True, check=True, env=ENV, cwd=tmp)
    ckpt = next((tmp / "run").rglob("last.ckpt"))
    gif_folder, sparse_folder = tmp / "gif", tmp / "sparse"
    for folder in (gif_folder, sparse_folder):
        folder.mkdir()
        Image.new("RGB", (40, 30), "red").save(folder / "photo.png")
    canvas = Image.new("RGB", (500, 500), "blue")
    frames = []
    for i in range(1000):  # each frame changes one pixel: the file stores a 1x1 patch per frame
        frame = canvas.copy()
        frame.putpixel((i % 500, i // 500), (255, 255, 0))
        frames.append(frame)
    frames[0].save(gif_folder / "moving.png", format="GIF", save_all=True, append_images=frames[1:], duration=10)
    Image.new("RGB", (10, 10), "green").save(sparse_folder / "huge.png")
    with open(sparse_folder / "huge.png", "r+b") as f:
        f.truncate(2 * 2**30)  # 2 GB of holes after a valid header
    for name, folder, file in (("predict: animated GIF, 1,000 frames of 500x500", gif_folder, "moving.png"),
                               ("predict: 2 GB sparse file with a PNG header", sparse_folder, "huge.png")):
        cases.append((name, folder / file, ["predict", *data_args, f"--ckpt_path={ckpt}",
                                            f"--data.predict_dir={folder}", f"--predictions.output_dir={tmp / 'p'}"]))
    # A result file the study cannot read, for the run it would train first (row 100): the code before looped.
    from lightning_cifar.study.config import load_study
    from lightning_cifar.study.progress import current_state

    plain_study = write_study(tmp / "plain-study.yaml", tiny_study(data, seeds=[0]))
    out = tmp / "broken-out"
    broken = out / "runs" / current_state(load_study(str(plain_study)), out, 0, 1).todo[0].run_id / "result.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{broken")
    cases.append(("study: a broken result.json in --out", broken, ["study", "-c", str(plain_study), "--out",
                                                                   str(out)]))
    return cases


ENV: dict[str, str] = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", default=str(REPO), help="checkout whose lightning_cifar to measure")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds before a case is killed")
    parser.add_argument("--json", help="append the results as JSON lines to this file")
    parser.add_argument("--only", help="run only the cases whose name contains this text")
    args = parser.parse_args()
    ENV.update({**os.environ, "PYTHONPATH": args.code, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    with tempfile.TemporaryDirectory() as tmp:
        cases = make_cases(Path(tmp))
        print(f"code: {args.code}")
        print(f"{'case':<52} {'file':>10} {'peak MiB':>9} {'s':>6}  outcome")
        for name, file, command in cases:
            if args.only and args.only not in name:
                continue
            size = os.stat(file).st_blocks * 512  # what the file takes on disk (the sparse one: a few KB)
            proc = subprocess.run([sys.executable, "-c", WRAPPER, str(args.deadline), sys.executable, "-m",
                                   "lightning_cifar", *command], capture_output=True, text=True, env=ENV, cwd=tmp)
            peak, seconds, outcome = proc.stdout.strip().split("\t")
            peak_mib = int(peak) / 1024
            print(f"{name:<52} {size / 1024:8.0f}KB {peak_mib:9.0f} {seconds:>6}  {outcome}", flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({"code": args.code, "case": name, "file_disk_bytes": size,
                                        "peak_mib": round(peak_mib), "seconds": float(seconds),
                                        "outcome": outcome}) + "\n")


if __name__ == "__main__":
    main()
