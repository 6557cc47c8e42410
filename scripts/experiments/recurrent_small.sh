#!/usr/bin/env bash
# recurrent-shakespeare-small, 3 seeds per row, two lanes of one-thread runs: truncated BPTT
# (full), e2e-shallow (BPTT through one core application: DiffusionBlocks' training memory),
# DiffusionBlocks, DiffusionBlocks with self-conditioning (self_condition=0.5).
# Usage: bash scripts/experiments/recurrent_small.sh OUT ; the readouts: recurrent_readouts.py
set -euo pipefail
out=${1:-/tmp/recurrent}
mkdir -p "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
row() {  # name methods [--set ...]
  local name=$1 methods=$2
  shift 2
  [ -f "$out/$name/comparison.json" ] && return 0
  dblocks compare --preset recurrent-shakespeare-small --methods "$methods" --seeds 3 \
    --set gen_prompts=0 "$@" --out "$out/$name" --json "$out/$name-rows.json" --no-progress \
    > "$out/$name.log" 2>&1
}
(row bptt bptt; row dblocks-sc dblocks --set self_condition=0.5) &
(row e2e-shallow e2e-shallow; row dblocks dblocks) &
wait
