#!/usr/bin/env bash
# A learning-rate sweep of any preset on val: seed 0, one thread per run, one lane per quoted
# argument (lanes run side by side, the runs of a lane one after another). Runs land in
# OUT/METHOD-lrLR; a finished run is skipped. Then: python scripts/experiments/lr_sweep_table.py OUT
# Usage: PRESET=vit-mnist1d bash scripts/experiments/lr_sweep.sh OUT "e2e:1e-3 e2e:4e-3" "dblocks:1e-3 ..."
set -euo pipefail
out=$1
shift
: "${PRESET:?set PRESET to the preset to sweep}"
mkdir -p "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
run() {  # method lr
  [ -f "$out/$1-lr$2/results.json" ] && return 0
  rm -rf "$out/$1-lr$2"
  dblocks train --preset "$PRESET" --set method="$1" --set lr="$2" --set seed=0 \
    --out "$out/$1-lr$2" --no-progress > "$out/$1-lr$2.log" 2>&1
}
lane() { for job in $1; do run ${job/:/ }; done; }
for jobs in "$@"; do lane "$jobs" & done
wait
