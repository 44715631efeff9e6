#!/usr/bin/env bash
# Wall time of one study with the sequential launcher (one run at a time, two threads), with Ray at one thread per
# run (two workers of one CPU each: faster, other numbers), and with Ray at the sequential launcher's thread count
# (the default: the same results.csv), one after the other on this machine. The study is configs/study/quick-cpu-part.yaml: six runs of quick-cpu.yaml (the width
# axis below the base network, 3 seeds), with the same run hashes.
#     bash benchmarks/study_launchers.sh [OUT_DIR]      (needs: pip install -e '.[ray]')
set -u
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d)}
echo "load before: $(cat /proc/loadavg)"
s=$(date +%s.%N); lightning-cifar study -c configs/study/quick-cpu-part.yaml --out "$out/seq" --data-dir ../shared/cifar10 > "$out/seq.log" 2>&1; rc=$?; e=$(date +%s.%N)
echo "sequential: $(echo "$e - $s" | bc) s, rc $rc"
s=$(date +%s.%N); lightning-cifar study -c configs/study/quick-cpu-part.yaml --out "$out/ray" --data-dir ../shared/cifar10 --launcher ray --cpus-per-run 1 --threads 1 > "$out/ray.log" 2>&1; rc=$?; e=$(date +%s.%N)
echo "ray (2 workers, 1 CPU and 1 thread each): $(echo "$e - $s" | bc) s, rc $rc"
s=$(date +%s.%N); lightning-cifar study -c configs/study/quick-cpu-part.yaml --out "$out/ray-same" --data-dir ../shared/cifar10 --launcher ray > "$out/ray-same.log" 2>&1; rc=$?; e=$(date +%s.%N)
echo "ray (the sequential launcher's thread count, as many CPUs reserved per run): $(echo "$e - $s" | bc) s, rc $rc"
echo "load after: $(cat /proc/loadavg)"
