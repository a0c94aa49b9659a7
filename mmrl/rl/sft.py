"""Cold-start supervised fine-tuning: `mmrl sft CONFIG [key=value ...] [--max-steps N] [--output-dir DIR]`.

The loop, as built (one step):

1. take `training.batch_size` samples from the resumable shuffled stream over the manifest's kept samples
   (`sft.variants`; of the counterfactuals only a `sft.counterfactual_fraction` share of the items, chosen by
   `training.seed`: few abstention labels leave GRPO calibration headroom), open their images, render their prompts
   exactly as GRPO does (`mmrl.models.prompts.prompt_inputs`);
2. the target of each sample is `mmrl.models.prompts.target_completion` in the recipe's template (think: the
   evidence boxes in the model's frame, then the answer; a counterfactual's answer is the abstention), ending with
   `<|im_end|>`;
3. loss = minus the mean log-prob of the completion tokens (prompt tokens carry no loss), through the one log-prob
   function `mmrl.models.logprobs.completion_logprobs`, averaged over every completion token of the step;
   micro-batches of `training.micro_batch_size` samples accumulate gradients;
4. clip to `training.max_grad_norm`, AdamW (the vision tower at `training.vision_lr_scale` times the LR), schedule;
5. log to `metrics.jsonl` / TensorBoard; checkpoint every `training.save_steps` and at the end in the trainer's
   format (`mmrl.io.checkpoint`), so `mmrl export RUN` and `mmrl train ... model.name_or_path=RUN/checkpoint-N/model`
   start from it; `training.resume=auto` continues from the latest checkpoint; with `data.eval_manifest`, a greedy
   evaluation at the end (`mmrl.eval.evaluate`), written to `RUN/eval/`.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from data_builders.build import ensure_manifest
from mmrl.boxes import FrameSpec
from mmrl.config.loader import load_run_config, to_dict
from mmrl.config.schema import SFTConfig, SFTOptions
from mmrl.data.manifest import SampleStream, read_manifest
from mmrl.errors import UserError
from mmrl.eval.evaluate import evaluate_samples, write_report
from mmrl.io import checkpoint, resume_guard
from mmrl.io import recovery as checkpoint_recovery
from mmrl.io.logger import MetricsLogger
from mmrl.models.loading import load_model_and_processor
from mmrl.models.logprobs import completion_logprobs
from mmrl.models.prompts import load_image, prompt_inputs, target_completion, tokenize_completions
from mmrl.rl.optim import build_optimizer, build_scheduler
from mmrl.types import Variant


def parse_args(argv: list[str]) -> SFTConfig:
    return load_run_config(SFTConfig, argv, "mmrl sft", "cold-start SFT of a Qwen-VL model")


def main(argv: list[str]) -> int:
    config = parse_args(argv)
    result = sft(config)
    print(f"mmrl sft: checkpoint {result.checkpoint} (model: {result.checkpoint / 'model'})")
    return 0


def select_samples(samples: list[Any], options: SFTOptions, seed: int) -> list[Any]:
    """The samples SFT trains on: the listed variants; counterfactuals of a seeded `counterfactual_fraction` of items.

    >>> from mmrl.types import Sample, Variant
    >>> s = [Sample(f"{g}:{v}", str(g), v, "a.png", (8, 8), "?", "x") for g in range(4) for v in Variant]
    >>> kept = select_samples(s, SFTOptions(counterfactual_fraction=0.5), seed=0)
    >>> len(kept), sum(x.variant == Variant.COUNTERFACTUAL for x in kept)
    (10, 2)
    """
    chosen = [s for s in samples if s.variant.value in options.variants]
    groups = sorted({s.group_id for s in chosen if s.variant == Variant.COUNTERFACTUAL})
    keep = set(random.Random(seed).sample(groups, round(options.counterfactual_fraction * len(groups))))
    return [s for s in chosen if s.variant != Variant.COUNTERFACTUAL or s.group_id in keep]


@dataclass
class SFTResult:
    run_dir: Path
    checkpoint: Path
    model: Any
    processor: Any
    step: int
    seconds: float
    eval_summary: dict[str, Any] | None = None


def sft_targets(processor: Any, samples: list[Any], config: SFTConfig, frame: Any) -> tuple[Any, Any]:
    """(completion_ids (B, T), completion_mask (B, T)) of the samples' target completions, `<|im_end|>` included."""
    targets = [target_completion(s, config.data.template, frame) for s in samples]
    return tokenize_completions(processor, targets, config.rollout.max_completion_length)


def sft_loss(model: Any, processor: Any, samples: list[Any], images: list[Any], ids: Any, mask: Any, data: Any):
    """Sum of -log p over the completion tokens `ids` (masked by `mask`) of `samples`: the prompt carries no loss."""
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in prompt_inputs(processor, samples, images, data).items()}
    logps = completion_logprobs(model, inputs, ids.to(device), mask.to(device))  # (B, T), 0 on padding
    return -logps.sum()


def sft(config: SFTConfig, progress: bool = True) -> SFTResult:
    """Run SFT as `config` says; returns the final checkpoint and the trained model."""
    t = config.training
    start_time = time.perf_counter()
    torch.manual_seed(t.seed)
    random.seed(t.seed)
    run_dir = Path(t.output_dir)
    resume_guard.check_resume_config(config, run_dir)  # before any model loads
    ensure_manifest(config.data.train_manifest, t.build_config)
    manifest = read_manifest(config.data.train_manifest)
    samples = select_samples(manifest.samples, config.sft, t.seed)
    if not samples:
        raise UserError(f"sft: no sample of {manifest.path} is left after sft.variants / counterfactual_fraction")
    model, processor, family = load_model_and_processor(config.model)
    frame = FrameSpec.for_family(family, config.model.min_pixels, config.model.max_pixels)
    optimizer, trainable = build_optimizer(t, model)
    scheduler = build_scheduler(t, optimizer)
    stream = SampleStream(len(samples), seed=t.seed, shuffle=config.data.shuffle)
    step = 0
    found = (
        checkpoint_recovery.resume(run_dir, model=model, optimizer=optimizer, scheduler=scheduler)
        if t.resume == "auto"
        else None
    )
    latest = None
    if found is not None:
        latest, resumed = found
        step = resumed.step
        stream.load_state_dict(resumed.trainer_state["data"])
    resume_guard.save_run_config(config, run_dir, step)
    logger = MetricsLogger(run_dir, tensorboard=config.logging.tensorboard, config=to_dict(config), resume_step=step)
    bar = tqdm(total=t.max_steps, initial=step, desc="sft", disable=not progress)
    last: Path | None = latest

    def save_now() -> Path:
        return checkpoint.save_checkpoint(
            run_dir, step, model=model, optimizer=optimizer, scheduler=scheduler, processor=processor,
            trainer_state={"data": stream.state_dict(), "stage": "sft"}, total_limit=t.save_total_limit,
        )  # fmt: skip

    loop_start = time.perf_counter()
    while step < t.max_steps:
        if config.sft.max_seconds and time.perf_counter() - loop_start >= config.sft.max_seconds:
            break
        step_start = time.perf_counter()
        batch = [samples[i] for i in stream.next_batch(t.batch_size)]
        try:
            images = [load_image(s, manifest.root, config.data) for s in batch]
        except (OSError, ValueError) as err:
            raise UserError(f"sft: {err}; fix the image or drop the sample from the manifest") from None
        ids, mask = sft_targets(processor, batch, config, frame)  # (B, T)
        num_tokens = int(mask.sum())  # every micro-batch's sum is divided by the step's token count
        total_loss = 0.0
        for i in range(0, len(batch), t.micro_batch_size):
            rows = slice(i, i + t.micro_batch_size)
            loss_sum = sft_loss(model, processor, batch[rows], images[rows], ids[rows], mask[rows], config.data)
            (loss_sum / num_tokens).backward()
            total_loss += float(loss_sum.detach())
        max_norm = t.max_grad_norm if t.max_grad_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, max_norm))
        if math.isfinite(grad_norm):
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step += 1
        loss = total_loss / max(num_tokens, 1)
        logger.log(step, {"loss": loss, "grad_norm": grad_norm, "lr": scheduler.get_last_lr()[0],
                          "tokens": num_tokens, "time/step": time.perf_counter() - step_start})  # fmt: skip
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        if t.save_steps and step % t.save_steps == 0:
            last = save_now()
    bar.close()
    if last is None or last.name != checkpoint.checkpoint_dir(run_dir, step).name:
        last = save_now()  # the end of the run, unless the loop just saved it (or a rerun found it done)
    eval_summary = None
    if config.data.eval_manifest:
        eval_manifest = read_manifest(config.data.eval_manifest)
        rows, eval_summary, _ = evaluate_samples(model, processor, frame, eval_manifest, config, progress=progress)
        write_report(run_dir / "eval", rows, eval_summary)
        flat = {
            f"eval/{variant}/{key}": value
            for variant, metrics in eval_summary["variants"].items()
            for key, value in metrics.items()
            if isinstance(value, float)
        }
        logger.log(step, flat)
    logger.close()
    model.eval()
    return SFTResult(run_dir, last, model, processor, step, time.perf_counter() - start_time, eval_summary)
