#!/usr/bin/env bash
# Evaluate a model on a manifest: scripts/eval.sh [mmrl eval arguments ...]   (runs `mmrl eval`; see its --help)
# Runs in the repository root: relative paths are relative to it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
bin="$(mmrl_bin)"
cmd=("${bin}mmrl" eval "$@")
echo "+ ${cmd[*]}" >&2
exec "${cmd[@]}"
