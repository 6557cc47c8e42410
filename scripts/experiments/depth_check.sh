#!/usr/bin/env bash
# The depth-sensitive presets' check (docs/protocol.md section 2): full-depth e2e against e2e of
# depth L/B, 3 seeds each, in a fresh process per run, one thread; DiffusionBlocks beside them on
# the image preset. Usage: bash scripts/experiments/depth_check.sh OUT
set -euo pipefail
out=${1:-/tmp/depth}
mkdir -p "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
caveat="p_mean=1 and weighting=none are the image classifier's noise setting (chosen on Fashion-MNIST), not tuned on MNIST-1D"
[ -f "$out/vit-mnist1d/comparison.json" ] || dblocks compare --preset vit-mnist1d \
  --methods e2e,e2e-shallow,dblocks --seeds 3 --caveat "$caveat" \
  --out "$out/vit-mnist1d" --json "$out/vit-mnist1d-rows.json" --no-progress
[ -f "$out/ar-shakespeare-small/comparison.json" ] || dblocks compare \
  --preset ar-shakespeare-small --methods e2e,e2e-shallow --seeds 3 --set gen_prompts=0 \
  --out "$out/ar-shakespeare-small" --json "$out/ar-shakespeare-small-rows.json" --no-progress
