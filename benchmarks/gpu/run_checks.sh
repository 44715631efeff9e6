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
# Our 94 % config against airbench94, same GPU, one after the other, both timed the same way: the whole
# process from launch to exit (start-up, data loading, whitening, training and one six-view test pass).
# Ours: --from-epoch 14 (its max_epochs) scores the test set once, after the last epoch (time_to_accuracy's process_wall_s).
timeout 150 python benchmarks/time_to_accuracy.py configs/speedrun-cpu-94.yaml --seeds 0 --targets 0.94 \
    --from-epoch 14 --reference-steps 0 --data-dir "$data" --json "$OUT/tta_speedrun94_gpu.json" \
    > "$OUT/speedrun94_ours.txt" 2>&1
python -m pip install --quiet --no-index --find-links gpu_data/part1/wheels airbench >> "$OUT/install.log" 2>&1
# airbench reads ./cifar10 (torchvision's layout; the MD5 check finds the files, so nothing is downloaded).
airbench_dir=$(mktemp -d) && ln -s "$data" "$airbench_dir/cifar10"
( cd "$airbench_dir" && timeout 120 python -c "
import time; start = time.time()
import airbench; airbench.train94()
print(f'process wall s (from the first import): {time.time() - start:.2f}')" ) > "$OUT/speedrun94_airbench.txt" 2>&1
timeout 150 python benchmarks/throughput.py --data-dir "$data" --reps 1 --steps 60 --batch-size 512 \
    > "$OUT/throughput.txt" 2> "$OUT/throughput.json"
python - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
summary = {p.stem: p.read_text()[-4000:] for p in out.glob("*.txt")}
(out / "gpu_results.json").write_text(json.dumps(summary, indent=1))
PY
tail -20 "$OUT/time_to_accuracy.txt" "$OUT/throughput.txt"
