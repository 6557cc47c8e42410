#!/usr/bin/env bash
# Issues 5-7 at CPU scale: character-level Shakespeare (Hamlet held out), sequences of 64, hidden 64,
# batch 32. Equal training compute = the same number of optimizer steps per layer (each block trains
# for the full schedule on its own layers, like the end-to-end model's every layer).
#   masked diffusion (issue 5): 6 layers, e2e vs DiffusionBlocks B=3, seeds 0-1, 2000 steps
#   autoregressive (issue 6): 8 layers, e2e vs DiffusionBlocks B=4 (gamma 0.1): sigma per token,
#     sigma per example, and per token + auxiliary clean CE (aux_ce=1), seed 0, 1000 steps
#   recurrent depth (issue 7): prelude 1, core 2, coda 1; truncated BPTT (12 iterations on average,
#     backprop through 4) vs DiffusionBlocks (core once per step), seed 0, 1000 steps
# Then: evaluations with the AR e2e model as judge, test-time depth sweeps, samples.
# Two runs at a time, one CPU thread each.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/text-small}
mkdir -p "$OUT"
TXT="--set seq_len=64 --set hidden=64 --set heads=4 --set batch_size=32 --set lr=2e-3"
GEN="--set gen_prompts=16 --set gen_prompt_len=16 --set gen_length=48"
jobs=(
  "mdm-e2e-s0 mdm-shakespeare $TXT --set train_subset=64000 --set method=e2e --set seed=0"
  "mdm-B3-s0 mdm-shakespeare $TXT --set train_subset=64000 --set seed=0"
  "ar-e2e-s0 ar-shakespeare $TXT $GEN --set train_subset=32000 --set method=e2e --set seed=0"
  "ar-B4-token-s0 ar-shakespeare $TXT $GEN --set train_subset=32000 --set seed=0"
  "rec-bptt-s0 recurrent-shakespeare $TXT $GEN --set train_subset=32000 --set prelude=1 --set core=2 --set coda=1 --set depth=4 --set mean_iterations=12 --set inference_steps=12 --set method=bptt --set seed=0"
  "rec-dblocks-s0 recurrent-shakespeare $TXT $GEN --set train_subset=32000 --set prelude=1 --set core=2 --set coda=1 --set depth=4 --set mean_iterations=12 --set inference_steps=12 --set seed=0"
  "ar-B4-token-aux-s0 ar-shakespeare $TXT $GEN --set train_subset=32000 --set aux_ce=1 --set seed=0"
  "ar-B4-example-s0 ar-shakespeare $TXT $GEN --set train_subset=32000 --set sigma_sampling=example --set seed=0"
  "mdm-e2e-s1 mdm-shakespeare $TXT --set train_subset=64000 --set method=e2e --set seed=1"
  "mdm-B3-s1 mdm-shakespeare $TXT --set train_subset=64000 --set seed=1"
)
printf '%s\n' "${jobs[@]}" | OMP_NUM_THREADS=1 xargs -P 2 -I{} sh -c '
  set -- {}; name=$1; preset=$2; shift 2
  [ -f "'"$OUT"'/$name/results.json" ] && exit 0
  rm -rf "'"$OUT"'/$name"
  .venv/bin/dblocks train --preset $preset --no-progress "$@" --out "'"$OUT"'/$name" \
    > "'"$OUT"'/$name.log" 2>&1 || echo "FAILED $name"'
# Evaluations: judge = the end-to-end AR model; depth sweeps for the recurrent models.
export OMP_NUM_THREADS=2
for r in ar-e2e-s0 ar-B4-token-s0 ar-B4-token-aux-s0 ar-B4-example-s0; do
  [ -f "$OUT/$r/eval-judged.json" ] || .venv/bin/dblocks eval --run "$OUT/$r" \
    --judge "$OUT/ar-e2e-s0" --json > "$OUT/$r/eval-judged.json"
done
for r in rec-bptt-s0 rec-dblocks-s0; do
  [ -f "$OUT/$r/eval-judged.json" ] || .venv/bin/dblocks eval --run "$OUT/$r" \
    --judge "$OUT/ar-e2e-s0" --steps 1 2 4 8 12 16 24 32 --json > "$OUT/$r/eval-judged.json"
done
for r in "$OUT"/*/; do
  n=$(basename "$r")
  case $n in
    mdm-*) args=(--length 64) ;;
    *) args=(--prompt "HAMLET. To be, or not to be" --length 36) ;;
  esac
  [ -f "$r/samples.txt" ] || for s in 0 1 2; do
    echo "--- seed $s"; .venv/bin/dblocks sample --run "$r" "${args[@]}" --seed $s
  done > "$r/samples.txt" 2>&1 || true
done
echo done
