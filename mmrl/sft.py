"""Cold-start supervised fine-tuning: `mmrl sft CONFIG [key=value ...] [--max-steps N] [--output-dir DIR]`.

The loop, as built (one step):

1. take `training.batch_size` samples from the resumable shuffled stream over the manifest's kept samples
   (`sft.variants`; of the counterfactuals only a `sft.counterfactual_fraction` share of the items, chosen by
   `training.seed`, keep the abstention label: few abstention labels leave GRPO calibration headroom; the others are
   left out or, with `sft.other_counterfactuals=original`, answered as if the evidence were there, as ordinary VQA
   data does), open their images, render their prompts
   exactly as GRPO does (`mmrl.prompts.prompt_inputs`);
2. the target of each sample is `mmrl.prompts.target_completion` in the recipe's template (think: the evidence boxes
   in the model's frame, then the answer; a counterfactual's answer is the abstention), ending with `<|im_end|>`;
3. loss = minus the mean log-prob of the completion tokens (prompt tokens carry no loss), through the one log-prob
   function `mmrl.logprobs.completion_logprobs`, averaged over every completion token of the step; micro-batches of
   `training.micro_batch_size` samples accumulate gradients;
4. clip to `training.max_grad_norm`, AdamW (the vision tower at `training.vision_lr_scale` times the LR), schedule;
5. log to `metrics.jsonl` / TensorBoard; checkpoint every `training.save_steps` and at the end in the trainer's
   format (`mmrl.checkpoint`), so `mmrl export RUN` and `mmrl train ... model.name_or_path=RUN/checkpoint-N/model`
   start from it; `training.resume=auto` continues from the latest checkpoint; with `data.eval_manifest`, a greedy
   evaluation at the end (`mmrl.evaluate`), written to `RUN/eval/`.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from mmrl.config import load_run_config, save_config, to_dict
from mmrl.errors import UserError
from mmrl.rewards.config import RewardConfig
from mmrl.train_config import (
    DataConfig,
    LoggingConfig,
    ModelConfig,
    RolloutConfig,
    TrainingConfig,
    check_templates,
)


@dataclass
class SFTOptions:
    variants: list[str] = field(default_factory=lambda: ["positive", "counterfactual", "random_masked"])
    # share of the items whose counterfactual keeps its (abstention) label; the others' counterfactuals are left out
    counterfactual_fraction: float = 1.0
    # what the other items' counterfactuals become: "drop" (left out) or "original": kept with the original answer
    # and the masked boxes as evidence, as ordinary VQA data labels every image (the habit of answering regardless)
    other_counterfactuals: Literal["drop", "original"] = "drop"
    # stop after this many seconds of training even before training.max_steps (0: no limit); e.g. a control arm
    # that gets the same wall time as a GRPO run
    max_seconds: float = 0.0

    def validate(self) -> None:
        valid = {"positive", "counterfactual", "random_masked"}
        if not self.variants or set(self.variants) - valid:
            raise ValueError(f"sft.variants must name some of {', '.join(sorted(valid))}, got {self.variants}")
        if not 0.0 <= self.counterfactual_fraction <= 1.0:
            raise ValueError("sft.counterfactual_fraction must be in [0, 1]")
        if self.max_seconds < 0:
            raise ValueError("sft.max_seconds must be >= 0")


@dataclass
class SFTConfig:
    """An SFT run's config: the training config's sections (minus grpo) plus `sft`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)  # max_completion_length caps targets and eval
    rewards: RewardConfig = field(default_factory=RewardConfig)  # used by the evaluation at the end
    training: TrainingConfig = field(default_factory=TrainingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    sft: SFTOptions = field(default_factory=SFTOptions)

    def validate(self) -> None:
        check_templates(self.data, self.rewards)


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
    from mmrl.types import Variant

    chosen = [s for s in samples if s.variant.value in options.variants]
    groups = sorted({s.group_id for s in chosen if s.variant == Variant.COUNTERFACTUAL})
    keep = set(random.Random(seed).sample(groups, round(options.counterfactual_fraction * len(groups))))
    out = []
    for s in chosen:
        if s.variant != Variant.COUNTERFACTUAL or s.group_id in keep:
            out.append(s)
        elif options.other_counterfactuals == "original":
            out.append(answered_regardless(s))
    return out


def answered_regardless(sample: Any) -> Any:
    """A counterfactual labelled as ordinary VQA data labels it: the original answer, the masked boxes as evidence.

    >>> from mmrl.types import Box, Sample, Variant
    >>> cf = Sample("g:cf", "g", Variant.COUNTERFACTUAL, "a.png", (8, 8), "?", "unknown",
    ...             masked=(Box(1, 1, 4, 4),), meta={"original_answer": "red", "original_aliases": ["crimson"]})
    >>> s = answered_regardless(cf)
    >>> s.answer, s.answer_aliases, s.variant.value, s.evidence == cf.masked, s.masked
    ('red', ('crimson',), 'positive', True, ())
    """
    from mmrl.types import Variant

    if "original_answer" not in sample.meta:
        raise UserError(f"sft.other_counterfactuals=original: sample {sample.id} has no meta.original_answer")
    return dataclasses.replace(
        sample,
        variant=Variant.POSITIVE,  # its SFT target is then an answer from the (masked) evidence boxes
        answer=sample.meta["original_answer"],
        answer_aliases=tuple(sample.meta.get("original_aliases", ())),
        evidence=sample.masked or sample.evidence,
        masked=(),
    )


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
    from mmrl.prompts import target_completion, tokenize_completions

    targets = [target_completion(s, config.data.template, frame) for s in samples]
    return tokenize_completions(processor, targets, config.rollout.max_completion_length)


def sft_loss(model: Any, processor: Any, samples: list[Any], images: list[Any], ids: Any, mask: Any, data: Any):
    """Sum of -log p over the completion tokens `ids` (masked by `mask`) of `samples`: the prompt carries no loss."""
    from mmrl.logprobs import completion_logprobs
    from mmrl.prompts import prompt_inputs

    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in prompt_inputs(processor, samples, images, data).items()}
    logps = completion_logprobs(model, inputs, ids.to(device), mask.to(device))  # (B, T), 0 on padding
    return -logps.sum()


def sft(config: SFTConfig, progress: bool = True) -> SFTResult:
    """Run SFT as `config` says; returns the final checkpoint and the trained model."""
    from tqdm import tqdm

    from mmrl import checkpoint
    from mmrl.boxes import FrameSpec
    from mmrl.data import SampleStream, read_manifest
    from mmrl.metrics import MetricsLogger
    from mmrl.models import load_model_and_processor
    from mmrl.prompts import load_image
    from mmrl.train import build_optimizer, ensure_train_manifest, lr_lambda

    t = config.training
    start_time = time.perf_counter()
    torch.manual_seed(t.seed)
    random.seed(t.seed)
    run_dir = Path(t.output_dir)
    ensure_train_manifest(config)  # type: ignore[arg-type]  # reads data.train_manifest and training.build_config
    manifest = read_manifest(config.data.train_manifest)
    samples = select_samples(manifest.samples, config.sft, t.seed)
    if not samples:
        raise UserError(f"sft: no sample of {manifest.path} is left after sft.variants / counterfactual_fraction")
    model, processor, family = load_model_and_processor(config.model)
    frame = FrameSpec.for_family(family, config.model.min_pixels, config.model.max_pixels)
    optimizer, trainable = build_optimizer(config, model)  # type: ignore[arg-type]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))  # type: ignore[arg-type]
    stream = SampleStream(len(samples), seed=t.seed, shuffle=config.data.shuffle)
    step = 0
    latest = checkpoint.latest_checkpoint(run_dir) if t.resume == "auto" else None
    if latest is not None:
        resumed = checkpoint.load_checkpoint(latest, model=model, optimizer=optimizer, scheduler=scheduler)
        step = resumed.step
        stream.load_state_dict(resumed.trainer_state["data"])
    save_config(config, run_dir)
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
        images = [load_image(s, manifest.root) for s in batch]
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
        from mmrl.evaluate import evaluate_samples, write_report

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
