#!/usr/bin/env bash
# Set up, then run the lint check, the type check and the default test suite (slow tests
# excluded), in worker processes (pytest-xdist: one per core, at most 4) of one OpenMP thread
# each, so that they do not oversubscribe the cores (tests/conftest.py sets one thread in every
# test anyway, for bitwise comparisons). One process: `.venv/bin/python -m pytest -q` (2-core
# machine: 15 min 48 s against 8 min 34 s).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests
.venv/bin/mypy  # settings and files in pyproject.toml ([tool.mypy])
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
.venv/bin/python -m pytest -q -n auto --maxprocesses 4 "$@"
