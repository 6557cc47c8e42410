#!/usr/bin/env bash
# The `images` preset (a user's own images) on two stand-in user datasets, choices read on the
# validation split (val_fraction 0.1 of the training images), 3 seeds each:
#   dblocks        the preset (P_mean = 1, no loss weighting, patch sized to the image), 10 and
#                  20 epochs per block
#   dblocks-paper  the paper's noise setting (P_mean = -1.2, batch-normalised EDM weighting)
#   e2e            end to end, 6 layers
#   e2e-shallow    end to end, 2 layers = L/B (the training memory of one block)
#   steps-E        dblocks with E epochs per block (digits only): how many steps a block needs
#   ...-e20        the baselines (and dblocks on fmnist16) with 20 epochs
# Two single-threaded runs at a time (2 cores). Runs land in runs/user-images/.
# Collect: python scripts/experiments/user_images_report.py
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/user-images}
SEEDS=${SEEDS:-0 1 2}
mkdir -p "$OUT/data"
[ -f "$OUT/data/fmnist16.npz" ] || .venv/bin/python scripts/experiments/make_user_npz.py "$OUT/data"
jobs=()
for data in digits8 fmnist16; do
  for seed in $SEEDS; do
    d="--set data=$OUT/data/$data.npz --set seed=$seed"
    # 10 epochs per block (the preset's value when these ran; names without -eE)
    jobs+=("$data-dblocks-s$seed $d --set epochs=10")
    jobs+=("$data-dblocks-paper-s$seed $d --set epochs=10 --set p_mean=-1.2 --set weighting=batch")
    jobs+=("$data-e2e-s$seed $d --set epochs=10 --set method=e2e")
    jobs+=("$data-e2e-shallow-s$seed $d --set epochs=10 --set method=e2e --set depth=2")
    # 20 epochs per block (the preset's value since; digits8 dblocks at 20 is steps-20 below)
    [ $data = fmnist16 ] && jobs+=("$data-dblocks-e20-s$seed $d --set epochs=20")
    jobs+=("$data-e2e-e20-s$seed $d --set epochs=20 --set method=e2e")
    jobs+=("$data-e2e-shallow-e20-s$seed $d --set epochs=20 --set method=e2e --set depth=2")
  done
done
# How many steps a block needs: dblocks on digits8 with E epochs per block (22 steps each)
for epochs in 1 2 5 20; do
  for seed in $SEEDS; do
    jobs+=("digits8-steps-$epochs-s$seed --set data=$OUT/data/digits8.npz --set seed=$seed --set epochs=$epochs")
  done
done
printf '%s\n' "${jobs[@]}" | xargs -P 2 -I{} bash -c '
  set -- {}; name=$1; shift
  [ -f '"$OUT"'/$name/results.json ] && exit 0
  rm -rf '"$OUT"'/$name
  OMP_NUM_THREADS=1 .venv/bin/dblocks train --preset images "$@" \
    --out '"$OUT"'/$name --no-progress > '"$OUT"'/$name.log 2>&1 || echo "FAILED $name"'
