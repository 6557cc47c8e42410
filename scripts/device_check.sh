#!/usr/bin/env bash
# The whole CUDA check, as one prepared script for a lent GPU machine (at most 480 s, the sum of
# its steps' limits; with the compare, 570 s):
#   bash scripts/device_check.sh OUT_DIR [FASHION_MNIST_DIR]
# 1. the tests that need CUDA (pytest -m cuda: every task trains and evaluates on the GPU,
#    block-resident training, precision=bf16, compile=true, the CUDA memory cap);
# 2. the memory and speed benchmarks on the `bench` preset (fp32, and the speed again in bf16);
# 3. `dblocks bench cap` on the GPU (the allocator's memory fraction as the cap);
# 4. with DEVICE_CHECK_COMPARE=1, `dblocks compare` of e2e and DiffusionBlocks on
#    vit-fmnist-quick (70 s more).
# DEVICE_CHECK_STEPS (default "tests memory speed bf16 cap") names the steps to run, and
# DEVICE_CHECK_TESTS, when set, is passed to pytest as -k (e.g. to rerun one failed test).
# Every step has its own time limit and the script goes on after a failure; OUT_DIR gets the
# JSON files, the log of every step (steps.log) and the card's name (device.txt). Limits from the
# first run on an H200 (2026-11-29, docs/results/cuda/): tests 119 s, speed 45 s (killed just
# after writing its JSON), compare 69 s; each fresh benchmark process took 15-20 s there (CUDA
# start and data loading), so memory and cap were killed at 75 and 60 s: memory now measures
# B=2 only (3 processes) and cap gets 140 s (6 processes); neither limit is measured yet.
# Uses the python3 on PATH with the package importable from src/ (and pytest installed).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: device_check.sh OUT_DIR [FASHION_MNIST_DIR]}
FM=${2:-/usr/share/datasets/fashion-mnist}
export FASHION_MNIST_DIR=$FM  # tests/test_cuda.py trains dit-tiny on it
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
D="python3 -m diffusionblocks"
mkdir -p "$OUT"
START=$SECONDS
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" \
  | tee "$OUT/device.txt"
STEPS=" ${DEVICE_CHECK_STEPS:-tests memory speed bf16 cap compare} "
[ "${DEVICE_CHECK_COMPARE:-0}" = 1 ] || STEPS=${STEPS/ compare / }
PYTEST_K=()
[ -z "${DEVICE_CHECK_TESTS:-}" ] || PYTEST_K=(-k "$DEVICE_CHECK_TESTS")
# step NAME LIMIT_SECONDS COMMAND...: unless NAME is left out of the steps, run the command under
# a time limit and log its status and duration
step() {
  local name=$1 limit=$2
  shift 2
  [[ $STEPS == *" $name "* ]] || return 0
  local t0=$SECONDS
  echo "=== $*"
  timeout "$limit" "$@"
  local rc=$?
  echo "$(printf '%4d' $((SECONDS - t0))) s  rc=$rc  $*" >>"$OUT/steps.log"
  [ $rc -eq 0 ] || echo "FAILED ($rc): $*"
}
step tests 140 python3 -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider "${PYTEST_K[@]}"
step memory 100 $D bench memory --preset bench --blocks 2 --set device=cuda --set data_dir="$FM" \
  --json "$OUT/bench-memory-cuda.json" --plot "$OUT/bench-memory-cuda.png"
step speed 50 $D bench speed --preset bench --blocks 2,4 --set device=cuda --set data_dir="$FM" \
  --repeats 20 --json "$OUT/bench-speed-cuda.json"
step bf16 50 $D bench speed --preset bench --blocks 3 --set device=cuda --set data_dir="$FM" \
  --set precision=bf16 --repeats 10 --json "$OUT/bench-speed-cuda-bf16.json"
step cap 140 $D bench cap --preset bench --set device=cuda --set data_dir="$FM" \
  --out /tmp/dc-cap --json "$OUT/bench-cap-cuda.json"
if [[ $STEPS == *" compare "* ]]; then
  step compare 90 $D compare --preset vit-fmnist-quick --set device=cuda --set data_dir="$FM" \
    --out /tmp/dc-cmp --json "$OUT/compare-quick-cuda-rows.json" --no-progress
  cp /tmp/dc-cmp/comparison.json "$OUT/compare-quick-cuda.json" 2>/dev/null
fi
echo "=== done in $((SECONDS - START)) s (steps: $OUT/steps.log)"
