#!/usr/bin/env bash
# Issue 13.1: quality and memory of block-resident training (one block in memory at a time)
# against the random schedule (all blocks resident), vit-fmnist-quick, B=3, 3 seeds, from the
# same runs. Shared-module policies compared in block-resident (sequential) training:
#   first-block (the default: shared modules train with block 0, then freeze),
#   sync (the old behaviour: they keep training with every block, so block 0 drifts),
#   frozen (never trained: initial weights).
# Two single-threaded runs at a time (2 cores). Runs land in runs/block-resident/.
# Collect: python scripts/experiments/block_resident_report.py
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/block-resident}
mkdir -p "$OUT"
jobs=()
for seed in 0 1 2; do
  jobs+=("random-s$seed --set schedule=random --set seed=$seed")
  jobs+=("seq-first-s$seed --set schedule=sequential --set seed=$seed")
  jobs+=("seq-sync-s$seed --set schedule=sequential --set shared=sync --set seed=$seed")
  jobs+=("seq-frozen-s$seed --set schedule=sequential --set shared=frozen --set seed=$seed")
done
printf '%s\n' "${jobs[@]}" | xargs -P 2 -I{} bash -c '
  set -- {}; name=$1; shift
  [ -f '"$OUT"'/$name/results.json ] && exit 0
  rm -rf '"$OUT"'/$name
  OMP_NUM_THREADS=1 .venv/bin/dblocks train --preset vit-fmnist-quick "$@" \
    --out '"$OUT"'/$name --no-progress > '"$OUT"'/$name.log 2>&1 || echo "FAILED $name"'
