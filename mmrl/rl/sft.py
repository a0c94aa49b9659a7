"""Cold-start supervised fine-tuning: `mmrl sft CONFIG [key=value ...] [--max-steps N] [--output-dir DIR]`.

The loop, as built (one step):

1. take `training.batch_size` samples from the resumable shuffled stream over the manifest's kept samples
   (`sft.variants`; of the counterfactuals only a `sft.counterfactual_fraction` share of the items, chosen by
   `training.seed`, keep the abstention label: few abstention labels leave GRPO calibration headroom; the others are
   left out or, with `sft.other_counterfactuals=original`, answered as if the evidence were there, as ordinary VQA
   data does), open their images, render their prompts exactly as GRPO does (`mmrl.models.prompts.prompt_inputs`);
2. the target of each sample is `mmrl.models.prompts.target_completion` in the recipe's template (think: the
   evidence boxes in the model's frame, then the answer; a counterfactual's answer is the abstention), ending with
   `<|im_end|>`;
3. loss = minus the mean log-prob of the completion tokens (prompt tokens carry no loss), through the one log-prob
   function `mmrl.models.logprobs.completion_logprobs`, averaged over every completion token of the step;
   micro-batches of `training.micro_batch_size` samples accumulate gradients;
4. clip to `training.max_grad_norm`, AdamW (the vision tower at `training.vision_lr_scale` times the LR), schedule:
   one optimiser step per step on any engine (`mmrl.rl.engine.accumulate_and_step`, shared with GRPO); with several
   processes (`scripts/train.sh` launches `mmrl sft` like `mmrl train`: DDP, ZeRO-2/3) each takes its share of the
   batch and the loss is the mean over every process's tokens, so 2 processes train as 1 does;
5. log to `metrics.jsonl` / TensorBoard; checkpoint every `training.save_steps` and at the end in the trainer's
   format (`mmrl.io.checkpoint`), so `mmrl export RUN` and `mmrl train ... model.name_or_path=RUN/checkpoint-N/model`
   start from it; `training.resume=auto` continues from the latest checkpoint; with `data.eval_manifest`, a greedy
   evaluation at the end (`mmrl.eval.evaluate`), written to `RUN/eval/`.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType, set_seed
from tqdm import tqdm

from data_builders.build import ensure_manifest
from mmrl.boxes import FrameSpec
from mmrl.config.loader import load_run_config, to_dict
from mmrl.config.schema import SFTConfig, SFTOptions
from mmrl.data.manifest import SampleStream, read_manifest
from mmrl.errors import UserError
from mmrl.eval.evaluate import evaluate_samples, write_report
from mmrl.io import checkpoint, resume_guard
from mmrl.io.logger import MetricsLogger
from mmrl.models.loading import load_model_and_processor
from mmrl.models.logprobs import completion_logprobs
from mmrl.models.prompts import load_image, prompt_inputs, target_completion, tokenize_completions
from mmrl.rl.dist import (
    all_reduce,
    any_process,
    configure_deepspeed,
    engine_name,
    generation_model,
    make_accelerator,
)
from mmrl.rl.engine import accumulate_and_step, resume_run, save_run_checkpoint, write_run_info
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
    targets = [target_completion(s, config.data.template, frame) for s in samples]
    return tokenize_completions(processor, targets, config.rollout.max_completion_length)


def sft_loss(model: Any, processor: Any, samples: list[Any], images: list[Any], ids: Any, mask: Any, data: Any):
    """Sum of -log p over the completion tokens `ids` (masked by `mask`) of `samples`: the prompt carries no loss."""
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in prompt_inputs(processor, samples, images, data).items()}
    logps = completion_logprobs(model, inputs, ids.to(device), mask.to(device))  # (B, T), 0 on padding
    return -logps.sum()


def scaled_micro_loss(
    k: int,
    *,
    model: Any,
    processor: Any,
    batch: list,
    images: list,
    ids: Any,
    mask: Any,
    data: Any,
    size: int,
    scale: float,
) -> tuple[torch.Tensor, bool]:
    """Micro-batch k of a step's share (its rows k*size..), summed -log p times `scale`; always a real pass."""
    rows = slice(k * size, (k + 1) * size)
    return sft_loss(model, processor, batch[rows], images[rows], ids[rows], mask[rows], data) * scale, True


def sft(config: SFTConfig, progress: bool = True) -> SFTResult:
    """Run SFT as `config` says (one process, or several through Accelerate); returns the final checkpoint and the
    trained model (unwrapped)."""
    t = config.training
    start_time = time.perf_counter()
    acc = make_accelerator()
    set_seed(t.seed)  # the same initial state on every process
    random.seed(t.seed)
    run_dir = Path(t.output_dir)
    resume_guard.check_resume_config(config, run_dir, acc.is_main_process)  # before any model loads
    if acc.is_main_process:
        ensure_manifest(config.data.train_manifest, t.build_config)
    acc.wait_for_everyone()
    manifest = read_manifest(config.data.train_manifest)
    samples = select_samples(manifest.samples, config.sft, t.seed)
    if not samples:
        raise UserError(f"sft: no sample of {manifest.path} is left after sft.variants / counterfactual_fraction")
    if t.batch_size % acc.num_processes:
        raise UserError(f"training.batch_size={t.batch_size} must split evenly over {acc.num_processes} processes")
    passes = math.ceil(t.batch_size // acc.num_processes / t.micro_batch_size)  # the same on every process
    if acc.distributed_type == DistributedType.DEEPSPEED:
        configure_deepspeed(acc, t.micro_batch_size, passes, t.max_grad_norm)
    model, processor, family = load_model_and_processor(config.model)
    model.to(acc.device)
    frame = FrameSpec.for_family(family, config.model.min_pixels, config.model.max_pixels)
    optimizer, trainable = build_optimizer(t, model)
    scheduler = build_scheduler(t, optimizer)
    model, optimizer = acc.prepare(model, optimizer)
    stream = SampleStream(
        len(samples), seed=t.seed, shuffle=config.data.shuffle, process_index=acc.process_index,
        num_processes=acc.num_processes,
    )  # fmt: skip
    step = 0
    found = (
        resume_run(acc, run_dir, model=model, optimizer=optimizer, scheduler=scheduler) if t.resume == "auto" else None
    )
    if found is not None:
        step = found[1].step
        stream.load_state_dict(found[1].trainer_state["data"])
    if acc.is_main_process:
        resume_guard.save_run_config(config, run_dir, step)
        write_run_info(acc, run_dir, model, passes, step)
    logger = MetricsLogger(
        run_dir, tensorboard=config.logging.tensorboard, config=to_dict(config), resume_step=step,
        is_main_process=acc.is_main_process,
    )  # fmt: skip
    bar = tqdm(total=t.max_steps, initial=step, desc="sft", disable=not (progress and acc.is_main_process))
    last: Path | None = found[0] if found is not None else None

    def save_now() -> Path:
        return save_run_checkpoint(
            acc, run_dir, step, model=model, optimizer=optimizer, scheduler=scheduler,
            trainer_state={"data": stream.state_dict(), "stage": "sft"}, processor=processor,
            total_limit=t.save_total_limit,
        )  # fmt: skip

    loop_start = time.perf_counter()
    while step < t.max_steps:
        out_of_time = config.sft.max_seconds and time.perf_counter() - loop_start >= config.sft.max_seconds
        if any_process(acc, bool(out_of_time)):  # every process stops at the same step
            break
        step_start = time.perf_counter()
        batch = [samples[i] for i in stream.next_batch(t.batch_size)]  # this process's share
        try:
            images = [load_image(s, manifest.root, config.data) for s in batch]
        except (OSError, ValueError) as err:
            raise UserError(f"sft: {err}; fix the image or drop the sample from the manifest") from None
        ids, mask = sft_targets(processor, batch, config, frame)  # (B, T)
        local_tokens = float(mask.sum())
        num_tokens = float(all_reduce(acc, torch.tensor([local_tokens], dtype=torch.float64)).item())
        # every micro-batch's sum over the step's tokens of every process; DDP and DeepSpeed average gradients
        # over the processes, so the factor P makes the step's gradient that of the global token mean
        scale = acc.num_processes / max(num_tokens, 1.0)

        micro_loss = partial(
            scaled_micro_loss, model=model, processor=processor, batch=batch, images=images, ids=ids, mask=mask,
            data=config.data, size=t.micro_batch_size, scale=scale,
        )  # fmt: skip
        stepped = accumulate_and_step(acc, model, optimizer, trainable, t.max_grad_norm, passes, micro_loss)
        scheduler.step()
        step += 1
        loss = float(all_reduce(acc, torch.tensor([stepped.loss])).item()) / acc.num_processes
        logger.log(step, {"loss": loss, "grad_norm": stepped.grad_norm, "lr": scheduler.get_last_lr()[0],
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
        eval_summary = final_evaluation(acc, model, processor, frame, config, logger, step, progress)
    logger.close()
    acc.wait_for_everyone()
    model = acc.unwrap_model(model).eval()
    return SFTResult(run_dir, last, model, processor, step, time.perf_counter() - start_time, eval_summary)


def final_evaluation(
    acc: Any, model: Any, processor: Any, frame: Any, config: SFTConfig, logger: Any, step: int, progress: bool
) -> dict[str, Any] | None:
    """The greedy evaluation at the end (the `mmrl eval` path), on the main process with the gathered weights
    (ZeRO-3 gathers them for every process; FSDP's forwards are collectives, so there `mmrl eval` does it)."""
    if engine_name(acc) == "fsdp":
        warnings.warn("sft under FSDP: no evaluation at the end; run `mmrl eval` on the exported model", stacklevel=2)
        return None
    summary = None
    with generation_model(model, acc) as unwrapped:
        if acc.is_main_process:
            eval_manifest = read_manifest(config.data.eval_manifest)
            rows, summary, _ = evaluate_samples(unwrapped, processor, frame, eval_manifest, config, progress=progress)
            write_report(Path(config.training.output_dir) / "eval", rows, summary)
            flat = {
                f"eval/{variant}/{key}": value
                for variant, metrics in summary["variants"].items()
                for key, value in metrics.items()
                if isinstance(value, float)
            }
            logger.log(step, flat)
    return summary
