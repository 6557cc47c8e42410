#!/usr/bin/env bash
# After text_small.sh: the autoregressive DiffusionBlocks runs evaluated with 1, 2, 4, 8 denoising
# steps, and the one-call-at-sigma_max predictive CE (added to `dblocks eval` after the runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/text-small}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
for r in ar-B4-token-s0 ar-B4-token-aux-s0 ar-B4-example-s0; do
  [ -f "$OUT/$r/results.json" ] || continue
  [ -f "$OUT/$r/eval-sweep.json" ] || .venv/bin/dblocks eval --run "$OUT/$r" \
    --judge "$OUT/ar-e2e-s0" --steps 1 2 4 8 --json > "$OUT/$r/eval-sweep.json"
done
echo done
