#!/usr/bin/env bash
# Install the test extras into .venv, then lint (ruff check + format check) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
echo "+ ruff check ."
.venv/bin/ruff check .
echo "+ ruff format --check ."
.venv/bin/ruff format --check .
echo "+ pytest"
.venv/bin/python -m pytest "$@"
