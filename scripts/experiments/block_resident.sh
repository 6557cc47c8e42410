#!/usr/bin/env bash
# Issue 13.1: quality and memory of block-resident training (one block in memory at a time)
# against all-resident schedules, vit-fmnist-quick, B=3, 3 seeds, accuracy and memory from the
# same runs. Variants:
#   random, cycle          all blocks resident, shared modules trained by every block (sync)
#   res-cycle              block-resident round robin (resident=true): a block swapped out takes
#                          its optimizer state to disk; computes what cycle computes, bitwise
#   seq-copies             block-resident, shared=block-copies (the default for block-resident)
#   seq-first              block-resident, shared=first-block (train with block 0, then freeze)
#   seq-sync               block-resident, shared=sync (the old behaviour: block 0 drifts)
#   seq-frozen             block-resident, shared=frozen (never trained)
# Two single-threaded runs at a time (2 cores). Runs land in runs/block-resident/.
# Collect: python scripts/experiments/block_resident_report.py
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/block-resident}
SEEDS=${SEEDS:-0 1 2}
mkdir -p "$OUT"
jobs=()
for seed in $SEEDS; do
  jobs+=("e2e-s$seed --set method=e2e --set seed=$seed")
  jobs+=("e2e-shallow-s$seed --set method=e2e --set depth=2 --set seed=$seed")
  jobs+=("random-s$seed --set schedule=random --set seed=$seed")
  jobs+=("seq-copies-s$seed --set schedule=sequential --set shared=block-copies --set seed=$seed")
  jobs+=("cycle-s$seed --set schedule=cycle --set seed=$seed")
  jobs+=("res-cycle-s$seed --set schedule=cycle --set resident=true --set seed=$seed")
  jobs+=("seq-first-s$seed --set schedule=sequential --set shared=first-block --set seed=$seed")
  jobs+=("seq-sync-s$seed --set schedule=sequential --set shared=sync --set seed=$seed")
  jobs+=("seq-frozen-s$seed --set schedule=sequential --set shared=frozen --set seed=$seed")
done
[ -n "${SWAP_ONLY:-}" ] && jobs=()  # SWAP_ONLY=1: only the I/O measurement below
[ ${#jobs[@]} -gt 0 ] && printf '%s\n' "${jobs[@]}" | xargs -P 2 -I{} bash -c '
  set -- {}; name=$1; shift
  [ -f '"$OUT"'/$name/results.json ] && exit 0
  rm -rf '"$OUT"'/$name
  OMP_NUM_THREADS=1 .venv/bin/dblocks train --preset vit-fmnist-quick "$@" \
    --out '"$OUT"'/$name --no-progress > '"$OUT"'/$name.log 2>&1 || echo "FAILED $name"'

# The I/O cost of swapping blocks in and out (12-layer ViT of the memory benchmark, B=3): training
# time of the all-resident cycle schedule against block-resident cycles that swap every visit of
# 1 or 8 steps, and the sequential order (one swap per block). One process at a time, on an
# otherwise idle machine (timing); swap_seconds in results.json is the time spent moving blocks.
for v in "cycle --set schedule=cycle" "res-cycle1 --set schedule=cycle --set resident=true" \
         "res-cycle8 --set schedule=cycle --set resident=true --set cycle_steps=8" \
         "seq --set schedule=sequential"; do
  set -- $v; name=swap-$1; shift
  [ -f "$OUT/$name/results.json" ] && continue
  rm -rf "$OUT/$name"
  .venv/bin/dblocks train --preset bench --set epochs=2 "$@" --out "$OUT/$name" --no-progress \
    > "$OUT/$name.log" 2>&1 || echo "FAILED $name"
done
