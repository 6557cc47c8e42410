#!/usr/bin/env bash
# The main job: set up, then train the same ViT end to end and with DiffusionBlocks (B=3) on
# Fashion-MNIST for a few CPU minutes, and print the comparison table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dblocks compare --preset vit-fmnist-quick "$@"
