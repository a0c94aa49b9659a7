#!/usr/bin/env bash
# Build a training manifest: scripts/build_data.sh CONFIG [key=value | @FILE ...]   (runs `mmrl build`)
#   scripts/build_data.sh configs/build/coop_fewshot.yaml @configs/recipes/coop/eurosat.build.args
#   scripts/build_data.sh configs/build/defacto.yaml source.path=data/defacto out=runs/data/defacto
# @FILE reads more overrides from FILE, one a line ('#' starts a comment). CONFIG and @FILE may be relative to the
# current folder or to the repository; the build runs in the repository root (out=runs/... lands there).
set -euo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  awk 'NR == 1 { next } /^#SBATCH/ || !/^#/ { exit } { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
  exit 0
fi
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
resolve() {
  if [[ -e $1 ]]; then
    printf '%s\n' "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
  else
    printf '%s\n' "$1"
  fi
}
config="$(resolve "$1")"
shift
overrides=()
for arg in "$@"; do
  if [[ $arg == @* ]]; then
    file="$(resolve "${arg#@}")"
    [[ -f $file ]] || file="$repo/${arg#@}"
    [[ -f $file ]] || { echo "build_data.sh: override file not found: ${arg#@}" >&2; exit 2; }
    while IFS= read -r line || [[ -n $line ]]; do
      line="${line%%#*}"
      line="${line#"${line%%[![:space:]]*}"}"
      line="${line%"${line##*[![:space:]]}"}"
      [[ -n $line ]] && overrides+=("$line")
    done <"$file"
  else
    overrides+=("$arg")
  fi
done
cd "$repo"
bin=""
[[ -x .venv/bin/mmrl ]] && bin=".venv/bin/"
cmd=("${bin}mmrl" build "$config" "${overrides[@]}")
echo "+ ${cmd[*]}" >&2
exec "${cmd[@]}"
