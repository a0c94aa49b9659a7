#!/usr/bin/env bash
# The README's first command: set up .venv, then run the whole flow on the embedded default (a tiny random-initialised
# Qwen2.5-VL, synthetic data, the CPU): build train + held-out manifests, evaluate the shipped warm start, GRPO,
# evaluate, export, before/after table and curves in runs/quickstart/. A rerun reuses every finished stage.
# Arguments go to scripts/quickstart.py (e.g. --grpo-steps 60, or GRPO overrides like training.learning_rate=1e-4).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
echo "+ .venv/bin/python scripts/quickstart.py $*"
exec .venv/bin/python scripts/quickstart.py "$@"
