#!/usr/bin/env bash
# The main job: set up, then train the same ViT on Fashion-MNIST for a few CPU minutes each way a
# user could (end to end at full depth, at depth L/B, with activation checkpointing, and with
# DiffusionBlocks B=3), and print one table with the trivial baseline (docs/protocol.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dblocks compare --preset vit-fmnist-quick --methods e2e,e2e-shallow,e2e-ckpt,dblocks "$@"
