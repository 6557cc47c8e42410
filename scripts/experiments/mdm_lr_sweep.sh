#!/usr/bin/env bash
# Learning rate of mdm-shakespeare-small, chosen on val for each method (seed 0, one thread per
# run, two runs at a time): lr in {5e-4, 1e-3, 2e-3} x {e2e, e2e-shallow, dblocks}, and 4e-3 for
# dblocks (added after 2e-3, the grid's edge, came out best for it).
# Usage: bash scripts/experiments/mdm_lr_sweep.sh OUT ; then
#        python scripts/experiments/lr_sweep_table.py OUT --json FILE
set -euo pipefail
out=${1:-/tmp/mdm-lr}
mkdir -p "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
run() {  # method lr
  [ -f "$out/$1-lr$2/results.json" ] && return 0
  rm -rf "$out/$1-lr$2"
  dblocks train --preset mdm-shakespeare-small --set method="$1" --set lr="$2" --set seed=0 \
    --out "$out/$1-lr$2" --no-progress > "$out/$1-lr$2.log" 2>&1
}
lane() { for job in "$@"; do run ${job/:/ }; done; }
lane e2e:5e-4 e2e:1e-3 e2e:2e-3 e2e-shallow:2e-3 &
lane dblocks:5e-4 dblocks:1e-3 dblocks:2e-3 e2e-shallow:5e-4 e2e-shallow:1e-3 dblocks:4e-3 &
wait
