#!/usr/bin/env bash
# Re-choose the classification presets' noise setting on the validation split (protocol:
# docs/protocol.md). DiffusionBlocks on vit-fmnist-quick, 2 seeds per setting; the choice reads
# eval_val only. Usage: bash scripts/experiments/noise_val_sweep.sh OUT  (one thread per run)
set -euo pipefail
out=${1:-/tmp/noise-val}
mkdir -p "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for setting in "p_mean=-1.2 weighting=batch" "p_mean=0 weighting=none" "p_mean=1 weighting=none" \
               "p_mean=2 weighting=none" "p_mean=1 weighting=batch" "p_mean=3 weighting=none"; do
  name=$(echo "$setting" | tr ' =' '_-')
  [ -f "$out/$name/comparison.json" ] && continue  # done in an earlier call
  sets=()
  for kv in $setting; do sets+=(--set "$kv"); done
  dblocks compare --preset vit-fmnist-quick --methods dblocks --seeds 2 "${sets[@]}" \
    --out "$out/$name" --json "$out/$name.json" --no-progress
done
