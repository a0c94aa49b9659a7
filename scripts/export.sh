#!/usr/bin/env bash
# Export a checkpoint as a plain Hugging Face model folder: scripts/export.sh [mmrl export arguments ...]
# (runs `mmrl export`; see its --help). Runs in the repository root: relative paths are relative to it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
bin="$(mmrl_bin)"
cmd=("${bin}mmrl" export "$@")
echo "+ ${cmd[*]}" >&2
exec "${cmd[@]}"
