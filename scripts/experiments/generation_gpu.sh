#!/usr/bin/env bash
# Issue 4 results, in one GPU session: (1) train the FID evaluator (the published recipe, 8 epochs)
# into the package's assets; (2) train side by side, one process each: end to end (= B=1) and
# DiffusionBlocks B=2, 3, 4 and B=3 with the uniform-log partition; (3) sample grids.
# Every run has a time limit so that the session always returns what finished.
# Results land in OUT/generation-first-round.tar.gz.
#   bash scripts/experiments/generation_gpu.sh OUT FASHION_MNIST_DIR [PRESET] [DEVICE] [EVAL_EPOCHS] [RUN_LIMIT_S]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?OUT}; FM=${2:?FASHION_MNIST_DIR}; PRESET=${3:-dit-fmnist}; DEVICE=${4:-cuda}
EVAL_EPOCHS=${5:-8}; LIMIT=${6:-330}
read -r -a EXTRA <<< "${EXTRA:-}"   # extra arguments for every run (e.g. a small model for a dry run)
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
WORK=$(mktemp -d); R=$WORK/runs; mkdir -p "$R" "$WORK/out"
D="python3 -m diffusionblocks"
if [ "$EVAL_EPOCHS" -gt 0 ]; then
  $D evaluator --out src/diffusionblocks/assets/fmnist_evaluator.safetensors --epochs "$EVAL_EPOCHS" \
    --data-dir "$FM" --device "$DEVICE" 2>&1 | tee "$WORK/out/evaluator.log"
  cp src/diffusionblocks/assets/fmnist_evaluator.* "$WORK/out/"
fi
run() {
  local name=$1; shift
  timeout "$LIMIT" $D train --preset "$PRESET" --set device="$DEVICE" --set data_dir="$FM" \
    --no-progress "${EXTRA[@]}" "$@" --out "$R/$name" > "$WORK/out/$name.log" 2>&1 \
    || echo "FAILED or timed out: $name" | tee -a "$WORK/out/failures.txt"
}
run e2e-s0 --set method=e2e &
run dblocks-B2-s0 --set num_blocks=2 &
run dblocks-B3-s0 --set num_blocks=3 &
run dblocks-B4-s0 --set num_blocks=4 &
run dblocks-B3-uniformlog-s0 --set num_blocks=3 --set partition=uniform-log &
wait
for name in e2e-s0 dblocks-B3-s0; do
  [ -f "$R/$name/results.json" ] && timeout 60 $D sample --run "$R/$name" --n 8 --seed 0 \
    --out "$WORK/out/samples-$name.png" >> "$WORK/out/samples.log" 2>&1
done
for d in "$R"/*/; do
  n=$(basename "$d")
  for f in results.json config.json metrics.jsonl; do cp "$d/$f" "$WORK/out/$n.$f" 2>/dev/null; done
done
tar czf "$OUT/generation-first-round.tar.gz" -C "$WORK/out" .
cat "$WORK/out/failures.txt" 2>/dev/null
grep -h -E "^FID|layer evaluations per image|held-out" "$WORK"/out/*.log | head -40
ls "$WORK/out"
