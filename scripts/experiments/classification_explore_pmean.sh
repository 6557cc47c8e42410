#!/usr/bin/env bash
# Issue 2 exploration, part 2: shift the training noise distribution (P_mean) so that block 0 sees
# more image-only noise levels; weighting=none. Quick setting as classification_explore.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/classification-first-round-explore}
D=".venv/bin/dblocks"
common=(--preset vit-fmnist-quick --set epochs=3 --no-progress --set method=dblocks --set weighting=none)
run() { local name=$1; shift; [ -f "$OUT/$name/results.json" ] || $D train "${common[@]}" "$@" --out "$OUT/$name"; }
run dblocks-B3-none-pmean0 --set p_mean=0
run dblocks-B3-none-pmean1 --set p_mean=1
for r in "$OUT"/dblocks-B3-*; do
  $D eval --run "$r" --set bridge_temperature=0 --steps 1 3 8 --json > "$r/eval-hard-bridge.json"
done
