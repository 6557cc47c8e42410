#!/usr/bin/env bash
# mdm-shakespeare-small, 3 seeds per method at the lr each method chose on val
# (mdm_lr_sweep.sh; pass them as LR_E2E, LR_SHALLOW, LR_DBLOCKS), two lanes of one-thread runs.
# Usage: LR_E2E=.. LR_SHALLOW=.. LR_DBLOCKS=.. bash scripts/experiments/mdm_small.sh OUT
set -euo pipefail
out=${1:-/tmp/mdm}
mkdir -p "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
row() {  # method lr
  [ -f "$out/$1/comparison.json" ] && return 0
  dblocks compare --preset mdm-shakespeare-small --methods "$1" --seeds 3 --set lr="$2" \
    --caveat "lr $2 chosen for $1 on val (seed 0; docs/results/masked-lm/lr-sweep.json)" \
    --out "$out/$1" --json "$out/$1-rows.json" --no-progress > "$out/$1.log" 2>&1
}
(row e2e "$LR_E2E"; row e2e-shallow "$LR_SHALLOW") &
(row dblocks "$LR_DBLOCKS") &
wait
