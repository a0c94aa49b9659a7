"""`mmrl export RUN_DIR --out MODEL_DIR`: a run's latest checkpoint as a plain Hugging Face model folder.

The folder holds what `AutoModelForImageTextToText.from_pretrained` and `AutoProcessor.from_pretrained` need, with
no mmrl import (and what vLLM serves):

- the weights as safetensors in transformers' standard key layout (checkpoints keep the in-memory names for an exact
  resume; `save_pretrained` with its default `save_original_format` writes the layout plain loaders expect), LoRA
  adapters merged into the base model first;
- the processor with the training pixel budget (`model.min_pixels` / `max_pixels`), so boxes mean at inference
  what they meant in training, and its chat template;
- `generation_config.json`: greedy, stopping at `<|im_end|>` or `<|endoftext|>`;
- `README.md`, a model card: the base model, the training config, the final metrics;
- `mmrl_config.yaml`, the run's resolved config (template, prompt layout, rewards), which `mmrl eval` and
  `mmrl infer` read; plain loaders ignore it.

The folder is written under a temporary name and renamed at the end: an interrupted export leaves no half folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from mmrl.errors import UserError
from mmrl.io import checkpoint as ckpt
from mmrl.io.recovery import intact_checkpoint, verify_checkpoint
from mmrl.models.loading import detect_family, set_pixel_budget
from mmrl.rollout.hf import STOP_TOKENS, token_ids

CONFIG_FILE = "mmrl_config.yaml"


def _final_metrics(run_dir: Path) -> dict[str, Any]:
    """The last logged value of every metric of the run (metrics.jsonl), or {} when there is none."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    latest: dict[str, Any] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        latest.update({k: v for k, v in record.items() if v is not None})
    return latest


def model_card(config: dict[str, Any], metrics: dict[str, Any], checkpoint: Path, family: str) -> str:
    """The README.md of an exported folder."""
    base = config.get("model", {}).get("name_or_path", "?")
    shown = {k: v for k, v in sorted(metrics.items()) if isinstance(v, int | float)}
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: image-text-to-text",
        "tags: [mmrl, grpo, qwen-vl]",
        "---",
        "",
        f"# {family} fine-tuned with mmrl",
        "",
        f"Exported by `mmrl export` from `{checkpoint}` (step {metrics.get('step', '?')}); base model `{base}`.",
        "Load it with `AutoModelForImageTextToText.from_pretrained` and `AutoProcessor.from_pretrained`; the processor",
        "keeps the training pixel budget, so the boxes the model names mean what they meant in training.",
        "",
        "## Final metrics",
        "",
    ]
    if shown:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in shown.items()]
    else:
        lines.append("(none logged)")
    lines += ["", "## Training config", "", "```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


def _load_trained_model(checkpoint_model: Path, config: dict[str, Any]) -> Any:
    """The checkpoint's weights in a plain model: full weights as saved, or the base model with LoRA merged."""
    import torch
    from transformers import AutoModelForImageTextToText

    model_cfg = config.get("model", {})
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[model_cfg.get("dtype", "float32")]
    remote = bool(model_cfg.get("trust_remote_code", False))
    if (checkpoint_model / "adapter_config.json").is_file():
        from peft import PeftModel

        base_path = model_cfg.get("name_or_path")
        if not base_path:
            raise UserError(f"{checkpoint_model} holds LoRA adapters but the run config names no base model")
        try:
            base = AutoModelForImageTextToText.from_pretrained(base_path, dtype=dtype, trust_remote_code=remote)
        except OSError as err:
            raise UserError(f"cannot load the base model {base_path!r}: {str(err).splitlines()[0]}") from None
        return PeftModel.from_pretrained(base, checkpoint_model).merge_and_unload()
    from safetensors import SafetensorError

    try:
        return AutoModelForImageTextToText.from_pretrained(checkpoint_model, dtype=dtype, trust_remote_code=remote)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:  # a checkpoint written without checksums
        raise UserError(f"cannot load the model in {checkpoint_model}: {str(err).splitlines()[0]}") from None


def export(run_dir: str | Path, out_dir: str | Path, checkpoint: str | Path | None = None) -> Path:
    """Write the plain model folder of `run_dir`'s latest (or the given) checkpoint to `out_dir`; returns it."""
    from transformers import AutoProcessor, GenerationConfig

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    # the output folder is replaced: only ever one that an earlier export wrote, or an empty one
    if out_dir.exists() and (
        not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / CONFIG_FILE).is_file())
    ):
        raise UserError(f"{out_dir} exists and is not an mmrl export: refusing to replace it (choose another --out)")
    # the newest checkpoint that verifies against its marker; damaged ones are skipped with a warning
    chosen = Path(checkpoint) if checkpoint is not None else intact_checkpoint(run_dir)
    if chosen is None or not (chosen / ckpt.STATE_FILE).is_file() or not (chosen / "model").is_dir():
        raise UserError(f"{run_dir} holds no finished checkpoint (a checkpoint-N folder with {ckpt.STATE_FILE})")
    damage = verify_checkpoint(chosen)
    if damage is not None:
        raise UserError(f"checkpoint {chosen} is damaged: {damage}")
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise UserError(f"{run_dir} has no config.yaml: not a run folder of mmrl train / mmrl sft")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    state = json.loads((chosen / ckpt.STATE_FILE).read_text(encoding="utf-8"))
    model = _load_trained_model(chosen / "model", config)
    family = detect_family(model.config)
    processor_dir = chosen / "model"
    if not (processor_dir / "processor_config.json").is_file():  # LoRA checkpoints saved without a processor
        processor_dir = Path(config.get("model", {}).get("name_or_path", ""))
    try:
        processor = AutoProcessor.from_pretrained(processor_dir)
    except OSError as err:
        raise UserError(f"cannot load the processor from {processor_dir}: {str(err).splitlines()[0]}") from None
    model_cfg = config.get("model", {})
    set_pixel_budget(processor, int(model_cfg.get("min_pixels", 56 * 56)), int(model_cfg.get("max_pixels", 200704)))
    stop_ids = token_ids(processor, STOP_TOKENS)
    generation = GenerationConfig(
        do_sample=False, eos_token_id=stop_ids, pad_token_id=stop_ids[-1],
        max_new_tokens=int(config.get("rollout", {}).get("max_completion_length", 256)),
    )  # fmt: skip
    model.generation_config = generation
    if not getattr(model, "_weight_conversions", None):
        # loaded from in-memory names (a checkpoint), from_pretrained recorded no renaming to revert; with None,
        # save_pretrained reverts transformers' default mapping for the family: the layout plain loaders read
        model._weight_conversions = None

    tmp = out_dir.parent / f".tmp-{out_dir.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)  # the standard key layout (save_original_format default)
    processor.save_pretrained(tmp)
    metrics = {**_final_metrics(run_dir), "step": int(state["step"])}
    (tmp / "README.md").write_text(model_card(config, metrics, chosen, family), encoding="utf-8")
    (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmrl export", description="export a run as a plain Hugging Face folder")
    parser.add_argument("run_dir", help="a run folder of mmrl train or mmrl sft")
    parser.add_argument("--out", required=True, help="the model folder to write (replaced if it exists)")
    parser.add_argument("--checkpoint", help="a checkpoint folder of the run (default: the latest)")
    args = parser.parse_args(argv)
    out = export(args.run_dir, args.out, args.checkpoint)
    print(f"mmrl export: wrote {out}")
    return 0
