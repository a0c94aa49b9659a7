#!/usr/bin/env bash
# The README's first command: set up .venv, then run the most complete flow that exists on the embedded default
# (a tiny random-initialised Qwen2.5-VL and synthetic data): build the manifest, train with GRPO on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
echo "+ mmrl train configs/debug_tiny.yaml $*"
.venv/bin/mmrl train configs/debug_tiny.yaml "$@"
