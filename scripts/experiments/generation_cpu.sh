#!/usr/bin/env bash
# The first-round generation results (2026-11-26) on the CPU: the dit-fmnist preset as it was
# then (12-layer DiT, hidden 64, patch 7, 3 epochs per block = equal total layer evaluations, 50
# Euler steps on the CDF grid, 2000 samples; given explicitly below since the preset was resized
# on 2026-11-29), seed 0: end to end (= B=1), DiffusionBlocks B=2, 3, 4, and B=3 with the
# uniform-log partition. Frechet distance from 2000 samples (CFG 2) in the Fashion-MNIST
# evaluator's feature space. Then sample grids of e2e and B=3.
#   bash scripts/experiments/generation_cpu.sh [PARALLEL]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/generation-first-round}; P=${1:-1}
D=${D:-.venv/bin/dblocks}
mkdir -p "$OUT" docs/results/generation/first-round
printf '%s\n' "e2e-s0 --set method=e2e" "dblocks-B3-s0 --set num_blocks=3" \
  "dblocks-B4-s0 --set num_blocks=4" "dblocks-B2-s0 --set num_blocks=2" \
  "dblocks-B3-uniformlog-s0 --set num_blocks=3 --set partition=uniform-log" |
  OMP_NUM_THREADS=1 xargs -P "$P" -I{} sh -c '
  set -- {}; name=$1; shift
  [ -f "'"$OUT"'/$name/results.json" ] && exit 0
  rm -rf "'"$OUT"'/$name"
  '"$D"' train --preset dit-fmnist --set depth=12 --set patch_size=7 --set epochs=3 \
    --set inference_steps=50 --set grid=cdf --set fid_samples=2000 --no-progress "$@" \
    --out "'"$OUT"'/$name" \
    > "'"$OUT"'/$name.log" 2>&1 || echo "FAILED $name"'
for name in e2e-s0 dblocks-B3-s0 dblocks-B4-s0; do
  [ -f "$OUT/$name/results.json" ] && $D sample --run "$OUT/$name" --n 8 --seed 0 \
    --out "docs/results/generation/first-round/samples-$name.png"
done
echo done
