#!/usr/bin/env bash
# GRPO training on one machine: scripts/train.sh CONFIG [key=value | @FILE ...]
# (MMRL_COMMAND=sft launches `mmrl sft` the same way: a supervised warm start on the same engines)
#
# With GPUs: `accelerate launch` over all of this machine's GPUs with configs/accelerate/$MMRL_ACCELERATE.yaml.
# Without:   one CPU process (`mmrl train`), or MMRL_NUM_PROCESSES CPU processes over gloo (torchrun, since
#            `accelerate launch --cpu --num_processes N` starts a single process on a machine without MPI), with
#            the engine MMRL_ACCELERATE names: ddp, zero2 or zero3 (DeepSpeed's CPU accelerator; needs deepspeed).
#            FSDP does not run on CPU processes (Accelerate enables it only for GPU-type process groups): it says
#            so and exits 2, never falling back to DDP (scripts/gpu_check.sh covers FSDP on GPUs).
# The run folder's run_info.json records the engine and the number of processes that ran.
# @FILE reads more overrides from FILE, one a line ('#' starts a comment), e.g. configs/recipes/coop/eurosat.args.
# CONFIG and @FILE paths may be relative to the current folder or to the repository; the run itself starts in the
# repository root, so paths inside configs and overrides (runs/...) are relative to it.
#
# Environment (all optional):
#   MMRL_COMMAND        train | sft (default train)
#   MMRL_ACCELERATE     ddp | zero2 | zero3 | fsdp (default ddp): which configs/accelerate/*.yaml
#   MMRL_NUM_PROCESSES  processes on this machine (default: the GPUs visible here, 1 without GPUs)
#   MMRL_MIXED_PRECISION  bf16 | fp16 | no (default bf16 on GPUs): autocast over the config's fp32 master weights
#   MMRL_NUM_MACHINES, MMRL_MACHINE_RANK, MMRL_MAIN_ADDR, MMRL_MAIN_PORT: several machines (scripts/slurm_train.sh
#                       sets them); defaults 1, 0, 127.0.0.1, 29500
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
read_overrides train.sh "$repo" "$@"
cd "$repo"

bin="$(mmrl_bin)"
command="${MMRL_COMMAND:-train}"
case "$command" in
  train | sft) ;;
  *) echo "train.sh: MMRL_COMMAND must be train or sft, got '$command'" >&2; exit 2 ;;
esac
mode="${MMRL_ACCELERATE:-ddp}"
case "$mode" in
  ddp | zero2 | zero3 | fsdp) ;;
  *) echo "train.sh: MMRL_ACCELERATE must be ddp, zero2, zero3 or fsdp, got '$mode'" >&2; exit 2 ;;
esac

gpus=0
if [[ -n ${CUDA_VISIBLE_DEVICES+x} ]]; then
  if [[ -n $CUDA_VISIBLE_DEVICES && $CUDA_VISIBLE_DEVICES != -1 ]]; then
    IFS=, read -ra visible <<<"$CUDA_VISIBLE_DEVICES"
    gpus=${#visible[@]}
  fi
elif command -v nvidia-smi >/dev/null 2>&1; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
fi
machines="${MMRL_NUM_MACHINES:-1}"
rank="${MMRL_MACHINE_RANK:-0}"
addr="${MMRL_MAIN_ADDR:-127.0.0.1}"
port="${MMRL_MAIN_PORT:-29500}"

export MMRL_ENGINE="$mode"  # mmrl stops with one line if Accelerate set up another engine
if [[ $gpus -gt 0 ]]; then
  nproc="${MMRL_NUM_PROCESSES:-$gpus}"
  cmd=("${bin}accelerate" launch --config_file "configs/accelerate/$mode.yaml"
    --num_processes "$((nproc * machines))" --num_machines "$machines" --machine_rank "$rank"
    --main_process_ip "$addr" --main_process_port "$port" --mixed_precision "${MMRL_MIXED_PRECISION:-bf16}"
    -m mmrl.cli "$command" "$config" "${overrides[@]}")
else
  nproc="${MMRL_NUM_PROCESSES:-1}"
  case "$mode" in
    ddp) export ACCELERATE_USE_CPU=1 ;;
    zero2 | zero3)
      export ACCELERATE_USE_DEEPSPEED=true ACCELERATE_DEEPSPEED_ZERO_STAGE="${mode#zero}" DS_ACCELERATOR=cpu ;;
    fsdp)
      echo "train.sh: FSDP needs GPUs: Accelerate turns FSDP on only for GPU-type process groups, never on CPU" \
        "processes; use MMRL_ACCELERATE=zero3 for sharded training on CPU processes" >&2
      exit 2 ;;
  esac
  if [[ $nproc -eq 1 && $machines -eq 1 && $mode == ddp ]]; then
    unset MMRL_ENGINE ACCELERATE_USE_CPU
    cmd=("${bin}mmrl" "$command" "$config" "${overrides[@]}")
  else
    echo "+ MMRL_ENGINE=$mode (no GPU: $nproc CPU processes per machine over gloo)" >&2
    cmd=("${bin}torchrun" --nproc_per_node "$nproc" --nnodes "$machines" --node_rank "$rank"
      --master_addr "$addr" --master_port "$port" -m mmrl.cli "$command" "$config" "${overrides[@]}")
  fi
fi
echo "+ ${cmd[*]}" >&2
exec "${cmd[@]}"
