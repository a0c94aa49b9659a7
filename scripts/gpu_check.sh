#!/usr/bin/env bash
# A recipe on a lent GPU machine (no network, so no real checkpoint): scripts/gpu_check.sh RECIPE [key=value ...]
# Builds a random-initialised model of the recipe's real shape (Qwen2.5-VL-7B / 3B, Qwen2-VL-2B) with a tiny
# tokenizer, a synthetic manifest of 448 x 448 images (256 visual tokens each), runs MMRL_CHECK_STEPS (default 2)
# GRPO steps through scripts/train.sh, then prints completion tokens per second and the GPUs' peak memory.
#   scripts/gpu_check.sh configs/recipes/clsrl_nothink_qwen2_vl_2b.yaml
#   MMRL_ACCELERATE=zero3 scripts/gpu_check.sh configs/recipes/defacto_qwen2_5_vl_7b.yaml training.batch_size=8
# One 80 GB GPU holds the 2B recipes (about 44 GB before activations); the 7B one needs ZeRO-3 over 8 GPUs, or
# model.lora=true on one (docs/launching.md, memory). MMRL_CHECK_DIR (default runs/gpu_check) holds the model, data
# and run; the run ends with a checkpoint (7B: about 100 GB with its optimizer state). MMRL_CHECK_SHAPE=tiny keeps
# the tiny widths (a dry run of this script, also on the CPU).
#
# `scripts/gpu_check.sh all` runs every GPU claim in one go and prints one table: the 3B-shaped grounding recipe for
# MMRL_CHECK_STEPS steps under ddp, zero2, zero3 and fsdp on the GPUs present (engine that ran, processes, optimizer
# steps per step, step time, peak memory per GPU), then bf16 `mmrl eval` and `mmrl infer` on the last checkpoint
# (--device cuda). Each part has a time limit (MMRL_CHECK_TIMEOUT seconds, default 600); a failed part is a row
# with its exit status, and the script exits non-zero when any part failed.
set -euo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
  exit 0
fi
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $1 == all ]]; then
  shift
  cd "$repo"
  python=python3
  [[ -x .venv/bin/python ]] && python=.venv/bin/python
  recipe=configs/recipes/grounding_qwen2_5_vl_3b.yaml
  root="${MMRL_CHECK_DIR:-runs/gpu_check}/all"
  limit="${MMRL_CHECK_TIMEOUT:-600}"
  mkdir -p "$root"
  failed=0
  rows=()
  for engine in ddp zero2 zero3 fsdp; do
    status=0
    MMRL_ACCELERATE=$engine MMRL_CHECK_DIR="$root/$engine" timeout "$limit" "${BASH_SOURCE[0]}" "$recipe" \
      training.save_steps=0 "$@" 2>&1 | tee "$root-$engine.log" || status=$?
    rows+=("$engine $status $root/$engine/$(basename "$recipe" .yaml)")
    [[ $status -eq 0 ]] || failed=1
  done
  run="$root/zero3/$(basename "$recipe" .yaml)"
  ckpt="$(find "$run/run" -maxdepth 1 -name 'checkpoint-*' 2>/dev/null | sort | tail -n 1)"
  for command in eval infer; do
    status=0
    if [[ -z $ckpt ]]; then
      status=3
    elif [[ $command == eval ]]; then
      timeout "$limit" "$python" -m mmrl.cli eval "$ckpt/model" "$run/data/manifest.jsonl" --limit 32 --batch-size 16 \
        --device cuda --out "$root/eval" >"$root-eval.log" 2>&1 || status=$?
    else
      image="$(find "$run/data" -name '*.png' -o -name '*.jpg' | sort | head -n 1)"
      timeout "$limit" "$python" -m mmrl.cli infer "$ckpt/model" --image "$image" --question "What shape is it?" \
        --device cuda --json >"$root-infer.log" 2>&1 || status=$?
    fi
    rows+=("$command $status $root-$command.log")
    [[ $status -eq 0 ]] || failed=1
  done
  "$python" - "${rows[@]}" <<'PY'
import json
import sys
from pathlib import Path

print("| check | exit | engine that ran | processes | optimizer steps / step | s / step (last) | peak MiB per GPU |")
print("|---|---|---|---|---|---|---|")
for row in sys.argv[1:]:
    name, status, where = row.split(" ", 2)
    where = Path(where)
    info = where / "run" / "run_info.json"
    metrics = where / "run" / "metrics.jsonl"
    engine = procs = steps = seconds = peak = "-"
    if info.is_file():
        data = json.loads(info.read_text())
        engine, procs = data["engine"], str(data["num_processes"])
    if metrics.is_file() and metrics.read_text().strip():
        last = json.loads(metrics.read_text().splitlines()[-1])
        steps, seconds = str(last.get("optimizer_steps", "-")), f"{last['time/step']:.1f}"
    memlog = where / "gpu_memory.csv"
    if memlog.is_file() and memlog.stat().st_size:
        top: dict[str, int] = {}
        for line in memlog.read_text().splitlines():
            gpu, used = (field.strip() for field in line.split(","))
            top[gpu] = max(top.get(gpu, 0), int(used))
        peak = " ".join(f"{g}:{m}" for g, m in sorted(top.items()))
    print(f"| {name} | {status} | {engine} | {procs} | {steps} | {seconds} | {peak} |")
PY
  exit "$failed"
fi
recipe="$1"
[[ -f $recipe ]] && recipe="$(cd "$(dirname "$recipe")" && pwd)/$(basename "$recipe")"
shift
cd "$repo"
python=python3
[[ -x .venv/bin/python ]] && python=.venv/bin/python
dir="${MMRL_CHECK_DIR:-runs/gpu_check}/$(basename "$recipe" .yaml)"
steps="${MMRL_CHECK_STEPS:-2}"
shape="${MMRL_CHECK_SHAPE:-real}"
export HF_HUB_OFFLINE=1

echo "+ $python - (a random-initialised $shape-shaped model of $recipe in $dir/model)" >&2
"$python" - "$recipe" "$dir/model" "$shape" <<'PY'
import sys

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from mmrl.config.loader import load_config
from mmrl.models.tiny import build_tiny_model
from mmrl.config.schema import TrainConfig

# the published configs' widths (config.json of each checkpoint); the tiny tokenizer's ids fit in any vocabulary
SHAPES = {
    "Qwen/Qwen2.5-VL-7B-Instruct": ("qwen2_5_vl", dict(hidden_size=3584, intermediate_size=18944,
        num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, vocab_size=152064), False,
        dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
             fullatt_block_indexes=[7, 15, 23, 31])),
    "Qwen/Qwen2.5-VL-3B-Instruct": ("qwen2_5_vl", dict(hidden_size=2048, intermediate_size=11008,
        num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2, vocab_size=151936), True,
        dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
             fullatt_block_indexes=[7, 15, 23, 31])),
    "Qwen/Qwen2-VL-2B-Instruct": ("qwen2_vl", dict(hidden_size=1536, intermediate_size=8960,
        num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, vocab_size=151936), True,
        dict(depth=32, embed_dim=1280, hidden_size=1536, mlp_ratio=4, num_heads=16)),
}  # fmt: skip
recipe, out, shape = sys.argv[1:]
name = load_config(TrainConfig, recipe).model.name_or_path
if name not in SHAPES:
    sys.exit(f"gpu_check.sh: no shape known for {name} (known: {', '.join(SHAPES)})")
family, text, tied, vision = SHAPES[name]
build_tiny_model(family, out)
if shape == "real":
    fields = AutoConfig.from_pretrained(out).to_dict()  # the tiny model's, with its token ids
    for key in ("layer_types", "head_dim", "max_window_layers"):  # derived from the widths: recomputed
        fields["text_config"].pop(key, None)
    fields["text_config"].update(text, tie_word_embeddings=tied)
    fields["text_config"]["rope_parameters"]["mrope_section"] = [16, 24, 24]  # head size 128 in all three
    fields["vision_config"].update(vision)
    fields.update(tie_word_embeddings=tied)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(out).save_pretrained(out)
    print(f"{name}-shaped model: {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters")
PY

# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"
bin="$(mmrl_bin)"
echo "+ ${bin}mmrl build configs/build/synthetic.yaml out=$dir/data source.image_size=448 ..." >&2
"${bin}mmrl" build configs/build/synthetic.yaml "out=$dir/data" source.num_items=64 source.image_size=448 \
  workers=0 progress=false overwrite=true

memlog="$dir/gpu_memory.csv"
sampler=""
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 500 >"$memlog" &
  sampler=$!
fi
start=$(date +%s)
status=0
scripts/train.sh "$recipe" "model.name_or_path=$dir/model" "data.train_manifest=$dir/data/manifest.jsonl" \
  "training.output_dir=$dir/run" "training.max_steps=$steps" training.resume=never training.save_steps=0 \
  logging.tensorboard=false logging.samples_steps=0 "$@" || status=$?
end=$(date +%s)
[[ -n $sampler ]] && kill "$sampler"

"$python" - "$dir/run/metrics.jsonl" "$memlog" "$((end - start))" "$status" <<'PY'
import json
import sys
from pathlib import Path

import yaml

metrics, memlog, wall, status = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
if rows:
    group = yaml.safe_load((metrics.parent / "config.yaml").read_text())["rollout"]["num_generations"]
for row in rows:
    tokens = row["groups_used"] * group * row["completion_length/mean"]  # completion tokens of the step
    print(f"step {row['step']}: {row['time/step']:.1f} s, {tokens:.0f} completion tokens: "
          f"{tokens / row['time/step']:.0f} tokens/s overall, {tokens / row['time/generate']:.0f} tokens/s generating; "
          f"generate {row['time/generate']:.1f} s, update {row['time/update']:.1f} s")
if memlog.is_file() and memlog.stat().st_size:
    peak: dict[str, int] = {}
    for line in memlog.read_text().splitlines():
        gpu, used = (field.strip() for field in line.split(","))
        peak[gpu] = max(peak.get(gpu, 0), int(used))
    print("peak GPU memory (MiB):", ", ".join(f"GPU {g}: {m}" for g, m in sorted(peak.items())))
print(f"wall {wall} s, training exit status {status}")
sys.exit(status)
PY
