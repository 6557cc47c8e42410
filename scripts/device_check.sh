#!/usr/bin/env bash
# CUDA check of the training, evaluation and benchmark paths, as run on a lent GPU machine:
#   bash scripts/device_check.sh OUT_DIR [FASHION_MNIST_DIR]
# Uses the python3 on PATH with the package importable from src/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: device_check.sh OUT_DIR [FASHION_MNIST_DIR]}
FM=${2:-/usr/share/datasets/fashion-mnist}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
D="python3 -m diffusionblocks"
mkdir -p "$OUT"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
step() { echo "=== $*"; "$@" || echo "FAILED ($?): $*"; }
step $D train --preset tiny --set device=cuda --out /tmp/dc-tiny --no-progress
step $D eval --run /tmp/dc-tiny --json
step $D train --preset tiny --set device=cuda --set schedule=sequential --out /tmp/dc-seq --no-progress
step $D train --preset tiny --set device=cuda --set blocks=1 --set checkpointing=true --out /tmp/dc-one --no-progress
step $D compare --preset vit-fmnist-quick --set device=cuda --set data_dir="$FM" --out /tmp/dc-cmp --no-progress
cp /tmp/dc-cmp/comparison.json "$OUT/compare-quick-cuda.json" 2>/dev/null
step $D bench speed --preset bench --blocks 2,3,4 --set device=cuda --set data_dir="$FM" --repeats 30 --json "$OUT/bench-speed-cuda.json"
step $D bench memory --preset bench --blocks 1,2,3,4,6 --set device=cuda --set data_dir="$FM" --json "$OUT/bench-memory-cuda.json" --plot "$OUT/bench-memory-cuda.png"
echo "=== done"
