#!/usr/bin/env bash
# Issue 2 exploration, part 3 (quick setting): P_mean = 2, and the weightings at P_mean = 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/classification-first-round-explore}
D=".venv/bin/dblocks"
common=(--preset vit-fmnist-quick --set epochs=3 --no-progress --set method=dblocks)
run() { local name=$1; shift; [ -f "$OUT/$name/results.json" ] || $D train "${common[@]}" "$@" --out "$OUT/$name"; }
run dblocks-B3-none-pmean2 --set weighting=none --set p_mean=2
run dblocks-B3-batch-pmean1 --set weighting=batch --set p_mean=1
run dblocks-B3-edm-pmean1 --set weighting=edm --set p_mean=1
