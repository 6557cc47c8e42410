#!/usr/bin/env bash
# Issue 2 exploration on the quick setting (Fashion-MNIST 20k train images, 3 epochs per block,
# 6-layer ViT hidden 64 patch 7): loss weighting options at B=3, a 2-layer end-to-end reference
# for block 0's capacity. Each run writes runs/classification-first-round-explore/<name>/results.json.
# The paper's noise defaults (P_mean=-1.2, weighting=batch) are set explicitly: they were the
# preset's values when these runs were made (2026-11-26, before commit 'Classification presets').
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/classification-first-round-explore}
D=".venv/bin/dblocks"
common=(--preset vit-fmnist-quick --set epochs=3 --set p_mean=-1.2 --set weighting=batch --no-progress)
run() { local name=$1; shift; [ -f "$OUT/$name/results.json" ] || $D train "${common[@]}" "$@" --out "$OUT/$name"; }
run e2e --set method=e2e
run e2e-depth2 --set method=e2e --set depth=2
for w in batch none edm clamped; do
  run dblocks-B3-$w --set method=dblocks --set num_blocks=3 --set weighting=$w
done
