# shellcheck shell=bash
# Shared by the launchers that take `CONFIG [key=value | @FILE ...]` (train.sh, build_data.sh); sourced, not run.

# print the comment block at the top of a script (its usage)
print_usage() {
  awk 'NR == 1 { next } /^#SBATCH/ || !/^#/ { exit } { sub(/^# ?/, ""); print }' "$1"
}

# a path given relative to the caller's folder, else as it is (relative to the repository; absolute paths stay)
resolve() {
  if [[ -e $1 ]]; then
    printf '%s\n' "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
  else
    printf '%s\n' "$1"
  fi
}

# read_overrides SCRIPT_NAME REPO ARG...: fills the global array `overrides`, expanding each @FILE into its lines
# (one override a line; '#' starts a comment; blank lines skipped)
read_overrides() {
  local name=$1 repo=$2 arg file line
  shift 2
  overrides=()
  for arg in "$@"; do
    if [[ $arg == @* ]]; then
      file="$(resolve "${arg#@}")"
      [[ -f $file ]] || file="$repo/${arg#@}"
      [[ -f $file ]] || { echo "$name: override file not found: ${arg#@}" >&2; exit 2; }
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
}

# the folder holding the mmrl command: .venv/bin/ when the repository has its environment, else PATH
mmrl_bin() {
  if [[ -x .venv/bin/mmrl ]]; then printf '.venv/bin/'; fi
}
