"""Evaluation: `mmrl eval MODEL_DIR MANIFEST [--out DIR]`, and the one greedy-evaluation path the trainer uses too.

- `greedy_completions`: batched greedy answers (left-padded prompts, image-pad token suppressed, stop at
  `<|im_end|>`), the same prompts as training (`mmrl.models.prompts.prompt_inputs`).
- `score_rows`: one row per sample: reward and terms (`mmrl.rewards.score_completions`), strict accuracy (exact
  match; abstaining counts as right on a counterfactual), lenient accuracy (the recipe's matcher, when it is not
  exact), abstention, format, and the named boxes in image pixels matched to the evidence.
- `summarize`: per variant and over all: accuracy, abstention rate, format rate, mean reward, grounding mean IoU and
  the DeFacto benchmark's detection metrics (AP50, AP75, mAP over IoU 0.5:0.95; boxes named on positive and
  random-masked images against their evidence); for classification samples, accuracy per dataset (`source`) and
  CLS-RL's base / new / harmonic mean (from `meta.class_split`, which the CoOp adapter records).
- `markdown_table`: the summary as the Markdown table `mmrl eval` writes beside its JSON.

A model folder made by `mmrl export` holds `mmrl_config.yaml` (the run's resolved config): the template, prompt
layout and reward settings come from it; `--config` names another config; without either the defaults apply.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmrl.boxes import FrameSpec
from mmrl.config.loader import _build, read_yaml
from mmrl.config.schema import TrainConfig
from mmrl.data.manifest import read_manifest
from mmrl.errors import UserError
from mmrl.eval.detection import detection_metrics
from mmrl.models.loading import detect_family
from mmrl.models.prompts import load_image, prompt_inputs
from mmrl.rewards.abstention import is_abstention
from mmrl.rewards.answer import accuracy_reward
from mmrl.rewards.compose import score_completions
from mmrl.rewards.format import format_reward
from mmrl.rewards.grounding import grounding_stats, predicted_boxes
from mmrl.rewards.parsing import extract_answer
from mmrl.rollout.hf import STOP_TOKENS, completion_mask_from_ids, decode_completions, generation_kwargs, token_ids
from mmrl.types import Box, Variant

CONFIG_FILE = "mmrl_config.yaml"
SUMMARY_KEYS = (
    "n", "accuracy", "accuracy_lenient", "abstention_rate", "format_rate", "reward",
    "mean_iou", "AP50", "AP75", "mAP", "AP50_unranked", "AP75_unranked", "mAP_unranked",
)  # fmt: skip
# what each matcher computes, for the table's `accuracy_lenient` column (mmrl/rewards/matchers.py has the details)
MATCHER_DEFINITIONS = {
    "exact": "normalised exact match (case, punctuation, articles, number words) with the answer or an alias",
    "multiple_choice": "the option named (by letter or text) is the target's option",
    "vqa_soft": "official VQA accuracy: mean over leave-one-out subsets of the human answers of min(1, matches / 3), "
    "the official normalisation",
    "anls": "ANLS as DocVQA / ST-VQA: 1 - normalised Levenshtein distance (lower-cased), 0 from distance 0.5",
    "relaxed_numeric": "ChartQA relaxed accuracy: numbers within 5% of the target (x% reads as x or x/100), "
    "text equal up to case",
    "label": "class label: normalised exact match, or its option's letter",
}


def column_definitions(matcher: str) -> dict[str, str]:
    """Column -> the definition it uses, written under the table."""
    return {
        "accuracy": "strict: " + MATCHER_DEFINITIONS["exact"] + "; abstaining counts as right on a counterfactual",
        "accuracy_lenient": f"the recipe's matcher `{matcher}`: {MATCHER_DEFINITIONS.get(matcher, matcher)}"
        if matcher != "exact"
        else "- (the recipe's matcher is exact)",
        "AP50, AP75, mAP": "COCO-style (pycocotools' COCOeval, one class, at most 100 boxes an image), the model's box "
        "order as its confidence; boxes named on positive and random-masked images against their evidence",
        "*_unranked": "mmrl's order-independent AP for boxes without scores: all boxes tie, one operating point",
        "mean_iou": "mean over samples of the IoU of one-to-one (Hungarian) matched boxes summed over max(#named, "
        "#evidence) boxes",
    }


def greedy_completions(
    model: Any,
    processor: Any,
    samples: Sequence[Any],
    images: Sequence[Any],
    data_config: Any,
    max_new_tokens: int,
    batch_size: int = 16,
    device: Any = None,
) -> list[str]:
    """Greedy completion texts for `samples` (with their opened `images`), in batches of `batch_size`, on `device`
    (default: the model's)."""
    import torch

    device = device or next(model.parameters()).device
    stop_ids = token_ids(processor, STOP_TOKENS)
    kwargs = generation_kwargs(processor, max_new_tokens)  # greedy
    was_training = model.training
    model.eval()
    texts: list[str] = []
    try:
        with torch.no_grad():
            for start in range(0, len(samples), batch_size):
                chunk, chunk_images = samples[start : start + batch_size], images[start : start + batch_size]
                inputs = prompt_inputs(processor, chunk, chunk_images, data_config)
                inputs = {k: v.to(device) for k, v in inputs.items()}
                ids = model.generate(**inputs, **kwargs)[:, inputs["input_ids"].shape[1] :]  # (B, T)
                mask, _ = completion_mask_from_ids(ids, stop_ids)
                texts += decode_completions(processor, ids.cpu(), mask.cpu())
    finally:
        model.train(was_training)
    return texts


def score_rows(texts: Sequence[str], samples: Sequence[Any], reward_config: Any, frame: Any) -> list[dict[str, Any]]:
    """One row per (completion, sample): everything `summarize` aggregates."""

    strict = dataclasses.replace(reward_config, matcher="exact")
    lenient = reward_config if reward_config.matcher != "exact" else None
    scores = score_completions(texts, samples, reward_config, frame)
    phrases = [*reward_config.abstention_phrases, reward_config.abstention_answer]
    rows = []
    for i, (text, sample) in enumerate(zip(texts, samples, strict=True)):
        answer = extract_answer(text, reward_config.template)
        label = sample.answer if sample.variant != Variant.COUNTERFACTUAL else None
        pred, _ = predicted_boxes(text, sample, frame, reward_config.max_boxes)
        # grounding is measured where the template asks for boxes: not for counterfactuals, not for the direct template
        grounded = sample.variant != Variant.COUNTERFACTUAL and reward_config.template != "direct"
        gt = list(sample.evidence) if grounded else []
        row: dict[str, Any] = {
            "id": sample.id,
            "variant": sample.variant.value,
            "task": sample.task,
            "source": sample.source,
            "class_split": sample.meta.get("class_split"),
            "question": sample.question,
            "answer": sample.answer,
            "completion": text,
            "parsed_answer": answer,
            "reward": scores.total[i],
            "terms": {name: values[i] for name, values in scores.terms.items()},
            "correct": accuracy_reward(text, sample, config=strict, frame=frame),
            "correct_lenient": None if lenient is None else accuracy_reward(text, sample, config=lenient, frame=frame),
            "abstained": float(answer is not None and is_abstention(answer, phrases, label=label)),
            "formatted": float(format_reward(text, sample, config=reward_config, frame=frame) >= 1.0),
            "pred_boxes": [b.to_list() for b in pred],
            "gt_boxes": [b.to_list() for b in gt],
            "iou": grounding_stats(pred, gt).mean_iou if gt else None,
        }
        rows.append(row)
    return rows


def _mean(values: Sequence[float | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _variant_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:

    out: dict[str, Any] = {
        "n": len(rows),
        "accuracy": _mean([r["correct"] for r in rows]),
        "accuracy_lenient": _mean([r["correct_lenient"] for r in rows]),
        "abstention_rate": _mean([r["abstained"] for r in rows]),
        "format_rate": _mean([r["formatted"] for r in rows]),
        "reward": _mean([r["reward"] for r in rows]),
        "mean_iou": _mean([r["iou"] for r in rows]),
    }
    items = [
        ([Box.from_list(b) for b in r["pred_boxes"]], [Box.from_list(b) for b in r["gt_boxes"]])
        for r in rows
        if r["gt_boxes"]
    ]
    out.update(detection_metrics(items) if items else dict.fromkeys(SUMMARY_KEYS[SUMMARY_KEYS.index("AP50") :]))
    return out


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """{"variants": {variant | "all": metrics}, "classification": {...} when there are classification samples}."""
    order = ["positive", "counterfactual", "random_masked"]
    variants = sorted({r["variant"] for r in rows}, key=lambda v: order.index(v) if v in order else len(order))
    summary: dict[str, Any] = {"variants": {}}
    for variant in [*variants, "all"]:
        chosen = [r for r in rows if variant in ("all", r["variant"])]
        summary["variants"][variant] = _variant_summary(chosen)
    classification = [r for r in rows if r["task"] == "classification"]
    if classification:
        per_source = {
            source: _mean([r["correct"] for r in classification if r["source"] == source])
            for source in sorted({r["source"] for r in classification})
        }
        cls: dict[str, Any] = {"accuracy": _mean([r["correct"] for r in classification]), "per_dataset": per_source}
        base = _mean([r["correct"] for r in classification if r["class_split"] == "base"])
        new = _mean([r["correct"] for r in classification if r["class_split"] == "new"])
        if base is not None and new is not None:
            cls.update(base=base, new=new, harmonic_mean=2 * base * new / (base + new) if base + new > 0 else 0.0)
        summary["classification"] = cls
    return summary


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown_table(summary: dict[str, Any]) -> str:
    """The per-variant summary (and the classification one) as Markdown."""
    lines = ["| variant | " + " | ".join(SUMMARY_KEYS) + " |", "|---" * (len(SUMMARY_KEYS) + 1) + "|"]
    for variant, metrics in summary["variants"].items():
        lines.append(f"| {variant} | " + " | ".join(_cell(metrics.get(k)) for k in SUMMARY_KEYS) + " |")
    cls = summary.get("classification")
    if cls:
        lines += ["", "| classification | accuracy |", "|---|---|"]
        lines += [f"| {name} | {_cell(acc)} |" for name, acc in cls["per_dataset"].items()]
        lines.append(f"| all datasets | {_cell(cls['accuracy'])} |")
        for key in ("base", "new", "harmonic_mean"):
            if key in cls:
                lines.append(f"| {key} | {_cell(cls[key])} |")
    if summary.get("definitions"):
        lines += ["", "Definitions:", *(f"- `{name}`: {text}" for name, text in summary["definitions"].items())]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Model folders: what `mmrl eval` and `mmrl infer` load


def read_model_config(model_dir: str | Path, config_path: str | Path | None = None) -> Any:
    """The run's TrainConfig: from `config_path`, else the model folder's `mmrl_config.yaml`, else the defaults.

    Sections other than those of a training config (e.g. an SFT run's `sft:`) are ignored."""

    path = Path(config_path) if config_path is not None else Path(model_dir) / CONFIG_FILE
    if config_path is None and not path.is_file():
        return TrainConfig()
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    # the same validation as `load_config`, on the sections a training config has
    return _build(TrainConfig, {k: v for k, v in read_yaml(path).items() if k in known})


def resolve_device(name: str) -> tuple[Any, Any]:
    """(device, dtype) for `--device`: auto is the first GPU in bf16 when there is one, else the CPU in fp32;
    cuda / cuda:N run in bf16, cpu in fp32. A GPU asked for on a machine without one is a UserError."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no GPU is visible here")
    return device, torch.bfloat16 if device.type == "cuda" else torch.float32


def load_model_folder(model_dir: str | Path, device: Any = "cpu", dtype: Any = None) -> tuple[Any, Any, str, Any]:
    """(model in eval mode, processor, family, FrameSpec from the processor's pixel budget) of a plain HF folder,
    on `device` in `dtype` (default fp32)."""
    import torch
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    dtype = dtype or torch.float32
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir} is not a model folder (no config.json); make one with `mmrl export`")
    try:
        family = detect_family(AutoConfig.from_pretrained(model_dir))
        processor = AutoProcessor.from_pretrained(model_dir)
        model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:  # missing, truncated or corrupt files
        raise UserError(
            f"cannot load model {model_dir}: {(str(err).splitlines() or [type(err).__name__])[0]}"
        ) from None
    size = processor.image_processor.size
    frame = FrameSpec.for_family(family, int(size["shortest_edge"]), int(size["longest_edge"]))
    return model.to(device).eval(), processor, family, frame


def evaluate_samples(
    model: Any, processor: Any, frame: Any, manifest: Any, config: Any, batch_size: int = 16, progress: bool = True
) -> tuple[list[dict[str, Any]], dict[str, Any], list[tuple[str, str]]]:
    """(rows, summary, skipped (sample id, reason)) of greedy answers on every sample of `manifest`."""
    from tqdm import tqdm

    samples, images, skipped = [], [], []
    for sample in manifest.samples:
        try:
            images.append(load_image(sample, manifest.root, config.data))
            samples.append(sample)
        except (OSError, ValueError) as err:
            skipped.append((sample.id, str(err)))
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(samples), desc="eval", disable=not progress, unit="sample")
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        texts = greedy_completions(
            model, processor, chunk, images[start : start + batch_size], config.data,
            config.rollout.max_completion_length, batch_size,
        )  # fmt: skip
        rows += score_rows(texts, chunk, config.rewards, frame)
        bar.update(len(chunk))
    bar.close()
    if not rows:
        raise UserError(f"no sample of {manifest.path} could be evaluated (first: {skipped[0][1]})")
    return rows, {**summarize(rows), "definitions": column_definitions(config.rewards.matcher)}, skipped


def write_report(out_dir: str | Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    json_path, md_path = out_dir / "metrics.json", out_dir / "metrics.md"
    json_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown_table(summary), encoding="utf-8")
    return json_path, md_path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmrl eval", description="greedy evaluation of a model folder")
    parser.add_argument("model_dir", help="a model folder (from `mmrl export`, or a checkpoint's model/)")
    parser.add_argument("manifest", help="manifest.jsonl to evaluate on")
    parser.add_argument("--out", help="folder for metrics.json, metrics.md, predictions.jsonl (default: MODEL/eval)")
    parser.add_argument("--config", help="a run config for template / prompt / rewards (default: the folder's own)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, help="evaluate only the first N samples")
    parser.add_argument("--device", default="auto", help="auto (a GPU in bf16 when present), cpu, cuda or cuda:N")
    args = parser.parse_args(argv)

    for name in ("limit", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    out = Path(args.out) if args.out else Path(args.model_dir) / "eval"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")

    manifest = read_manifest(args.manifest)
    if args.limit is not None:
        manifest.samples = manifest.samples[: args.limit]
    config = read_model_config(args.model_dir, args.config)
    model, processor, _, frame = load_model_folder(args.model_dir, *resolve_device(args.device))
    t0 = time.perf_counter()
    rows, summary, skipped = evaluate_samples(model, processor, frame, manifest, config, args.batch_size)
    summary["rejected_lines"] = len(manifest.rejects)
    summary["skipped_samples"] = len(skipped)
    json_path, md_path = write_report(out, rows, summary)
    print(markdown_table(summary), end="")
    if manifest.rejects:
        line, reason = manifest.rejects[0]
        print(f"{len(manifest.rejects)} bad manifest lines skipped (first: line {line}: {reason})")
    if skipped:
        print(f"{len(skipped)} samples skipped (first: {skipped[0][1]})")
    print(f"evaluated {len(rows)} samples in {time.perf_counter() - t0:.1f}s -> {json_path}, {md_path}")
    return 0
