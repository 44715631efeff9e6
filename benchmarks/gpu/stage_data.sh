#!/usr/bin/env bash
# Split the real CIFAR-10 into three parts of at most ~62 MiB for the device tool's carry limit.
set -euo pipefail
cd "$(dirname "$0")/../.."
src=${1:-../shared/cifar10/cifar-10-batches-py}
rm -rf gpu_data
for part in 1 2 3; do mkdir -p "gpu_data/part$part/cifar-10-batches-py"; done
cp "$src/data_batch_1" "$src/data_batch_2" gpu_data/part1/cifar-10-batches-py/
cp "$src/data_batch_3" "$src/data_batch_4" gpu_data/part2/cifar-10-batches-py/
cp "$src/data_batch_5" "$src/test_batch" "$src/batches.meta" gpu_data/part3/cifar-10-batches-py/
# The device image has PyTorch and Lightning but not jsonargparse (LightningCLI needs it),
# and nothing can be downloaded there: bring the wheels along.
python -m pip download --quiet --no-deps --dest gpu_data/part1/wheels \
    jsonargparse docstring-parser typeshed-client
# airbench (Keller Jordan's speedrun as a package; needs CUDA), for the side-by-side run of issue 12.
python -m pip wheel --quiet --no-deps --wheel-dir gpu_data/part1/wheels airbench==0.1.8
du -sh gpu_data/part*
