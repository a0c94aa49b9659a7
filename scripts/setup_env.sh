#!/usr/bin/env bash
# Create (or reuse) the local virtual environment .venv and install mmrl into it.
# Usage: scripts/setup_env.sh [extra ...]   e.g. scripts/setup_env.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "+ $PYTHON -m venv .venv"
  "$PYTHON" -m venv .venv
fi
extras="ocr${1:+,$1}"
stamp=".venv/.mmrl-installed-$(sha1sum pyproject.toml | cut -c1-12)-${extras//,/-}"
if [ ! -f "$stamp" ]; then
  echo "+ pip install -e .[$extras] (first run: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  # torch and torchvision first, pinned together, so no other package pulls a different build
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  .venv/bin/python -m pip install -q -e ".[$extras]"
  # see pyproject.toml's `ocr` extra for why --no-deps
  .venv/bin/python -m pip install -q --no-deps "rapidocr-onnxruntime>=1.4,<1.5"
  if [[ ",$extras," == *,test,* ]]; then
    # the sharded-training tests run DeepSpeed on CPU processes; no compiled ops (its CPU comm op is turned off)
    DS_BUILD_OPS=0 .venv/bin/python -m pip install -q --no-build-isolation "deepspeed>=0.16,<1"
  fi
  touch "$stamp"
fi
