#!/usr/bin/env bash
# Issue 2, paper-like depth: 12-layer ViT (hidden 64, patch 7) on Fashion-MNIST, 5 epochs per
# block, seed 0: end to end and DiffusionBlocks B=3, 4 (the preset's P_mean=1, no weighting).
# Two runs at a time, one CPU thread each; then a hard-bridge evaluation of the dblocks runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/classification-first-round-depth12}
mkdir -p "$OUT"
printf '%s\n' "e2e-s0 --set method=e2e" "dblocks-B4-s0 --set num_blocks=4" \
  "dblocks-B3-s0 --set num_blocks=3" |
  OMP_NUM_THREADS=1 xargs -P 2 -I{} sh -c '
  set -- {}; name=$1; shift
  [ -f "'"$OUT"'/$name/results.json" ] && exit 0
  rm -rf "'"$OUT"'/$name"
  .venv/bin/dblocks train --preset vit-fmnist --set depth=12 --no-progress "$@" \
    --out "'"$OUT"'/$name" > "'"$OUT"'/$name.log" 2>&1 || echo "FAILED $name"'
for r in "$OUT"/dblocks-*/; do
  [ -f "$r/eval-hard-bridge.json" ] || OMP_NUM_THREADS=2 .venv/bin/dblocks eval --run "$r" \
    --set bridge_temperature=0 --steps 1 3 --json > "$r/eval-hard-bridge.json"
done
echo done
