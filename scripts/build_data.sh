#!/usr/bin/env bash
# Build a training manifest: scripts/build_data.sh CONFIG [key=value | @FILE ...]   (runs `mmrl build`)
#   scripts/build_data.sh configs/build/coop_fewshot.yaml @configs/recipes/coop/eurosat.build.args
#   scripts/build_data.sh configs/build/defacto.yaml source.path=data/defacto out=runs/data/defacto
# @FILE reads more overrides from FILE, one a line ('#' starts a comment). CONFIG and @FILE may be relative to the
# current folder or to the repository; the build runs in the repository root (out=runs/... lands there).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  print_usage "${BASH_SOURCE[0]}"
  exit 0
fi
config="$(resolve "$1")"
shift
read_overrides build_data.sh "$repo" "$@"
cd "$repo"
bin="$(mmrl_bin)"
cmd=("${bin}mmrl" build "$config" "${overrides[@]}")
echo "+ ${cmd[*]}" >&2
exec "${cmd[@]}"
