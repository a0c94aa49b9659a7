#!/usr/bin/env bash
# GRPO training over several machines under SLURM: one task per node, each runs scripts/train.sh over its GPUs.
#   sbatch --nodes 4 scripts/slurm_train.sh CONFIG [key=value | @FILE ...]      (from the repository root)
#   MMRL_REPO=/path/to/mmrl sbatch --nodes 4 /path/to/mmrl/scripts/slurm_train.sh CONFIG ...   (from anywhere)
# Rendezvous: the first host of the allocation (scontrol show hostnames) is the main process, on MMRL_MAIN_PORT
# (default 29500); each node's rank is its SLURM_NODEID. MMRL_ACCELERATE picks ddp / zero2 / zero3 / fsdp as in
# scripts/train.sh. Paths are relative to the repository root.
#SBATCH --job-name=mmrl-grpo
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --output=slurm-%j.out
set -euo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  awk 'NR == 1 { next } /^#SBATCH/ || !/^#/ { exit } { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
  exit 0
fi
# sbatch runs a copy of this file from its spool folder: find the repository from MMRL_REPO or the submit folder
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n ${MMRL_REPO:-} ]]; then
  repo="$MMRL_REPO"
elif [[ -f $here/scripts/train.sh ]]; then
  repo="$here"
else
  repo="${SLURM_SUBMIT_DIR:-$PWD}"
fi
[[ -f $repo/scripts/train.sh ]] || { echo "slurm_train.sh: no scripts/train.sh in $repo (set MMRL_REPO)" >&2; exit 2; }
: "${SLURM_JOB_NODELIST:?slurm_train.sh runs inside a SLURM allocation (sbatch or salloc)}"
: "${SLURM_NNODES:?SLURM_NNODES is not set}"

# read every host (`| head -n 1` would end scontrol with SIGPIPE, which pipefail turns into a failure)
mapfile -t hosts < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
[[ ${#hosts[@]} -gt 0 ]] || { echo "slurm_train.sh: scontrol lists no host for $SLURM_JOB_NODELIST" >&2; exit 2; }
export MMRL_MAIN_ADDR="${hosts[0]}"
export MMRL_MAIN_PORT="${MMRL_MAIN_PORT:-29500}"
export MMRL_NUM_MACHINES="$SLURM_NNODES"
cd "$repo"
echo "+ srun: $SLURM_NNODES nodes, main $MMRL_MAIN_ADDR:$MMRL_MAIN_PORT, scripts/train.sh $*" >&2
# the node rank is read on each node, inside the task (single quotes: expanded there, not here)
# shellcheck disable=SC2016
exec srun --nodes "$SLURM_NNODES" --ntasks-per-node 1 --kill-on-bad-exit=1 \
  bash -c 'MMRL_MACHINE_RANK="$SLURM_NODEID" exec scripts/train.sh "$@"' slurm_train "$@"
