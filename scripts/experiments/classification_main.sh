#!/usr/bin/env bash
# Issue 2 results: Fashion-MNIST (60k/10k), preset vit-fmnist (6-layer ViT, hidden 64, patch 7,
# 5 epochs per block = equal total layer evaluations), seeds 0-2:
#   e2e; DiffusionBlocks B=2,3,4 with the preset's P_mean=1, weighting=none;
#   DiffusionBlocks B=3 with the paper's noise defaults (P_mean=-1.2, weighting=batch);
#   weighting comparison at B=3 (batch, edm: seeds 0-1; clamped: seed 0).
# Two runs at a time, one CPU thread each. Then a hard-bridge evaluation of every dblocks run.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/classification-first-round-main}
mkdir -p "$OUT"
jobs=()
for s in 0 1 2; do
  jobs+=("e2e-s$s --set method=e2e --set seed=$s")
  for B in 3 2 4; do jobs+=("dblocks-B$B-s$s --set num_blocks=$B --set seed=$s"); done
  jobs+=("dblocks-B3-paper-s$s --set p_mean=-1.2 --set weighting=batch --set seed=$s")
done
for s in 0 1; do
  for w in batch edm; do jobs+=("dblocks-B3-$w-s$s --set weighting=$w --set seed=$s"); done
done
jobs+=("dblocks-B3-clamped-s0 --set weighting=clamped --set seed=0")
printf '%s\n' "${jobs[@]}" | OMP_NUM_THREADS=1 xargs -P 2 -I{} sh -c '
  set -- {}; name=$1; shift
  [ -f "'"$OUT"'/$name/results.json" ] && exit 0
  rm -rf "'"$OUT"'/$name"
  .venv/bin/dblocks train --preset vit-fmnist --no-progress "$@" --out "'"$OUT"'/$name" > "'"$OUT"'/$name.log" 2>&1 || echo "FAILED $name"'
for r in "$OUT"/dblocks-*/; do
  [ -f "$r/eval-hard-bridge.json" ] || OMP_NUM_THREADS=2 .venv/bin/dblocks eval --run "$r" \
    --set bridge_temperature=0 --steps 1 3 --json > "$r/eval-hard-bridge.json"
done
echo done
