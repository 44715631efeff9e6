#!/usr/bin/env bash
# Runs on the device machine: every GPU check in one call. Results go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
data=$PWD/gpu_data/merged
mkdir -p "$data/cifar-10-batches-py"
for part in 1 2 3; do cp -n gpu_data/part$part/cifar-10-batches-py/* "$data/cifar-10-batches-py/" 2>/dev/null || true; done
ls -l "$data/cifar-10-batches-py" > "$OUT/files.txt"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python -m pip install --quiet --no-index --find-links gpu_data/part1/wheels jsonargparse docstring-parser \
    typeshed-client > "$OUT/install.log" 2>&1
# --no-deps: use the image's torch/Lightning; the install registers our backbones' entry points.
python -m pip install --quiet --no-deps --no-build-isolation -e . >> "$OUT/install.log" 2>&1
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" > "$OUT/torch.txt" 2>&1
timeout 300 python benchmarks/time_to_accuracy.py configs/fast-gpu.yaml --seeds 0 --targets 0.9 0.94 \
    --data-dir "$data" --json "$OUT/tta_fast_gpu.json" > "$OUT/time_to_accuracy.txt" 2>&1
timeout 150 python benchmarks/throughput.py --data-dir "$data" --reps 1 --steps 60 --batch-size 512 \
    > "$OUT/throughput.txt" 2> "$OUT/throughput.json"
python - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
summary = {p.stem: p.read_text()[-4000:] for p in out.glob("*.txt")}
(out / "gpu_results.json").write_text(json.dumps(summary, indent=1))
PY
tail -20 "$OUT/time_to_accuracy.txt" "$OUT/throughput.txt"
