#!/usr/bin/env bash
# Set up, then run the lint check, the type check and the default test suite (slow tests
# excluded).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests
.venv/bin/mypy  # settings and files in pyproject.toml ([tool.mypy])
.venv/bin/python -m pytest -q "$@"
