"""GRPO training: `mmrl train CONFIG [key=value ...] [--max-steps N] [--output-dir DIR]`.

The algorithm, as built (one step; every process runs it on its own slice of the global batch):

1. rollout: take `training.batch_size` samples (global; each of P processes takes batch_size / P, contiguous) from
   a resumable shuffled stream over the manifest. For each sample: open its image and render its chat prompt
   (a sample whose image is unreadable or whose prompt exceeds `rollout.max_prompt_length` is skipped and
   counted), then sample G = `rollout.num_generations` completions with HF generate (temperature, top-p, top-k;
   image-pad token suppressed; stop at <|im_end|>). The sampling RNG of a sample is seeded from
   (`training.seed`, the sample's position in the stream), so the completions do not depend on the number of
   processes or on a resume. The G completions of a sample are one contiguous group.
2. rewards: `mmrl.rewards.score_completions` gives each completion a total (weighted sum of terms) and its terms.
3. advantages: A = (r - group mean) / (std + 1e-4), std of the group, of the global batch, or no division
   (`grpo.scale_rewards`). With `grpo.drop_zero_spread`, groups whose rewards are all equal are dropped and more
   samples are drawn (up to `grpo.max_refill_rounds` more global batches) until each process has its share.
4. old / reference log-probs through `mmrl.logprobs.completion_logprobs` (the one log-prob function, images
   included): old ones only when `grpo.num_iterations` > 1 (otherwise the policy's own, detached); reference ones
   only when `grpo.beta` > 0 (a frozen copy of the initial model, or the LoRA model with its adapters off).
5. policy update, `grpo.num_iterations` times: per micro-batch of `training.micro_batch_size` completions, the
   clipped surrogate -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A) (rho per token, or per sequence for
   GSPO) plus beta * k3 KL, reduced by `grpo.loss_type` (see `mmrl.grpo`); gradients accumulate over the
   micro-batches (synchronised across processes only on the last), are clipped to `training.max_grad_norm`, and
   AdamW steps; a non-finite loss or gradient norm skips the step with a warning. The LR schedule (warm-up, then
   constant / linear / cosine) advances once per training step.
6. log: metrics to the terminal, `metrics.jsonl`, TensorBoard (and W&B); every `logging.samples_steps` an HTML
   page of sampled completions; every `training.eval_steps` a greedy evaluation on `data.eval_manifest`, per variant.
7. checkpoint every `training.save_steps` and at the end (`mmrl.checkpoint`: atomic; `training.resume=auto`
   continues from the latest one, weights, optimizer, schedule, RNG and data position, exactly).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmrl import grpo
from mmrl.config import load_config, load_run_config, to_dict
from mmrl.errors import UserError
from mmrl.resume_guard import check_resume_config, save_run_config
from mmrl.train_config import TrainConfig


def parse_args(argv: list[str]) -> TrainConfig:
    return load_run_config(TrainConfig, argv, "mmrl train", "GRPO training of a Qwen-VL model")


def main(argv: list[str]) -> int:
    config = parse_args(argv)  # a bad config fails here, before any model loads
    train(config)
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Inputs a run makes when they are missing (configs/debug_tiny.yaml runs from a clean checkout)


def ensure_train_manifest(config: TrainConfig) -> None:
    """Build the synthetic manifest when `data.train_manifest` is missing and `training.build_config` names how."""
    manifest = Path(config.data.train_manifest)
    if manifest.is_file() or not config.training.build_config:
        return
    from data_builders.build import build  # the data builders are needed only here
    from data_builders.config import BuildConfig

    print(f"mmrl: building {manifest} from {config.training.build_config} (the manifest is missing)")
    overrides = [f"out={manifest.parent}", "workers=0", "progress=false"]
    build(load_config(BuildConfig, config.training.build_config, overrides))
    if not manifest.is_file():
        raise UserError(f"building {config.training.build_config} did not write {manifest}")


# ----------------------------------------------------------------------------------------------------------------
# One step's rollouts: contiguous groups of G completions per sample


@dataclass
class Group:
    """The G completions of one sample, with its prompt (one row) and rewards."""

    sample: Any
    image: Any
    prompt: dict[str, torch.Tensor]  # one unpadded prompt row: input_ids (1, P), pixel_values, image_grid_thw, ...
    completion_ids: torch.Tensor  # (G, T)
    completion_mask: torch.Tensor  # (G, T)
    texts: list[str]
    truncated: torch.Tensor  # (G,)
    rewards: torch.Tensor  # (G,)
    terms: dict[str, list[float | None]] = field(default_factory=dict)

    @property
    def zero_spread(self) -> bool:
        return bool(grpo.group_advantages(self.rewards, len(self.rewards), "none").zero_spread.item())


def sample_seed(seed: int, position: int) -> int:
    """The sampling seed of the sample at `position` in the stream: independent of process count and resume."""
    return (seed * 1_000_003 + position * 7_919 + 17) % (2**62)


def make_group(ctx: Run, model: Any, sample: Any, position: int) -> Group:
    """Prompt, G sampled completions and rewards of one sample; raises SampleError when it can't be used."""
    from mmrl.data import SampleError
    from mmrl.prompts import load_image, prompt_inputs
    from mmrl.rewards.compose import score_completions
    from mmrl.rollout import generate_completions

    cfg = ctx.config
    try:
        image = load_image(sample, ctx.manifest.root, cfg.data)
    except (OSError, ValueError) as err:
        raise SampleError(str(err)) from None
    prompt = prompt_inputs(ctx.processor, [sample], [image], cfg.data)
    if prompt["input_ids"].shape[1] > cfg.rollout.max_prompt_length:  # never cut: that would cut image tokens
        raise SampleError(f"sample {sample.id}: prompt of {prompt['input_ids'].shape[1]} tokens is too long")
    prompt = {k: v.to(ctx.device) for k, v in prompt.items()}
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
        torch.manual_seed(sample_seed(cfg.training.seed, position))
        if ctx.vllm is not None:  # a vLLM server samples the group, seeded the same way
            seed = sample_seed(cfg.training.seed, position)
            rollout = ctx.vllm.generate(sample, image, prompt["input_ids"], cfg.rollout.num_generations, seed)
        else:
            rollout = generate_completions(model, ctx.processor, prompt, cfg.rollout.num_generations, cfg.rollout)
    t1 = time.perf_counter()
    scores = score_completions(rollout.texts, [sample] * len(rollout.texts), cfg.rewards, ctx.frame)
    ctx.timers["time/generate"] += t1 - t0
    ctx.timers["time/rewards"] += time.perf_counter() - t1
    return Group(
        sample, image, prompt, rollout.completion_ids, rollout.completion_mask, rollout.texts, rollout.truncated,
        torch.tensor(scores.total, dtype=torch.float32), scores.terms,
    )  # fmt: skip


def collect_groups(ctx: Run) -> tuple[list[Group], dict[str, float]]:
    """This process's groups for one step: draw, roll out, score; with drop_zero_spread, drop and refill."""
    from trl.models.utils import unwrap_model_for_generation

    from mmrl.data import SampleError

    cfg, acc = ctx.config, ctx.accelerator
    need = cfg.training.batch_size // acc.num_processes
    per_process = need
    kept: list[Group] = []
    spare: list[Group] = []  # zero-spread groups, used only if a process would otherwise have none
    generated = zero_spread = skipped = 0
    rounds = 1 + (cfg.grpo.max_refill_rounds if cfg.grpo.drop_zero_spread else 0)
    for _ in range(rounds):
        first = ctx.stream.position + acc.process_index * per_process
        indices = ctx.stream.next_batch(cfg.training.batch_size)
        # ZeRO-3 gathers the sharded weights for generation here; DDP just unwraps (and gradient checkpointing,
        # which would drop the generation cache, is off inside)
        with unwrap_model_for_generation(ctx.model, acc) as model:
            if ctx.vllm is not None:  # send the share's requests at once: the server batches them
                ctx.vllm.prefetch(ctx, indices, first, sample_seed)
            for offset, index in enumerate(indices):
                try:
                    group = make_group(ctx, model, ctx.manifest.samples[index], first + offset)
                except SampleError as err:
                    skipped += 1
                    warnings.warn(f"skipping a sample: {err}", stacklevel=1)
                    continue
                generated += 1
                zero_spread += group.zero_spread
                (spare if cfg.grpo.drop_zero_spread and group.zero_spread else kept).append(group)
        missing = max(need - len(kept), 0) if cfg.grpo.drop_zero_spread else (need if not kept else 0)
        if _all_reduce(acc, torch.tensor([float(missing)]), "max").item() == 0:
            break
    kept = kept[:need] or spare[:1]
    if _all_reduce(acc, torch.tensor([float(len(kept) == 0)]), "max").item() > 0:
        raise RuntimeError("no usable sample in this step's batch on some process (see the warnings above)")
    stats = {"groups_generated": generated, "groups_zero_spread": zero_spread, "samples_skipped": skipped}
    return kept, stats


def _all_reduce(accelerator: Any, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    if accelerator.num_processes == 1:
        return tensor
    return accelerator.reduce(tensor.to(accelerator.device), reduction=op).cpu()


def group_rows(ctx: Run, groups: list[Group], rows: list[int], num_generations: int) -> dict[str, Any]:
    """Model inputs for completion rows `rows` (row r = completion r % G of group r // G): each row's prompt,
    left-padded to the longest, with its image; completions right-padded to the longest."""
    pad_id = ctx.pad_token_id
    prompts = [groups[r // num_generations].prompt for r in rows]
    width = max(p["input_ids"].shape[1] for p in prompts)

    def left_pad(key: str, value: int) -> torch.Tensor:
        return torch.cat([torch.nn.functional.pad(p[key], (width - p[key].shape[1], 0), value=value) for p in prompts])

    inputs: dict[str, Any] = {
        "input_ids": left_pad("input_ids", pad_id),
        "attention_mask": left_pad("attention_mask", 0),
    }
    if "mm_token_type_ids" in prompts[0]:
        inputs["mm_token_type_ids"] = left_pad("mm_token_type_ids", 0)
    inputs["pixel_values"] = torch.cat([p["pixel_values"] for p in prompts])  # (patches of the rows, D)
    inputs["image_grid_thw"] = torch.cat([p["image_grid_thw"] for p in prompts])  # (rows, 3)
    completions = [groups[r // num_generations] for r in rows]
    length = max(g.completion_ids.shape[1] for g in completions)

    def right_pad(tensor: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(tensor, (0, length - tensor.shape[0]), value=value)

    pairs = [(g, r % num_generations) for g, r in zip(completions, rows, strict=True)]
    ids = torch.stack([right_pad(g.completion_ids[i], pad_id) for g, i in pairs])  # (rows, T)
    mask = torch.stack([right_pad(g.completion_mask[i], 0) for g, i in pairs])
    return {"prompt_inputs": inputs, "completion_ids": ids.to(ctx.device), "completion_mask": mask.to(ctx.device)}


# ----------------------------------------------------------------------------------------------------------------
# The loss of one micro-batch (the function the TRL parity test checks)


def micro_batch_loss(
    model: Any,
    batch: dict[str, Any],
    advantages: torch.Tensor,
    old_logps: torch.Tensor | None,
    ref_logps: torch.Tensor | None,
    config: TrainConfig,
    *,
    num_micro_batches: int,
    global_num_tokens: float,
    num_processes: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The scalar to call backward on for one micro-batch, and sums for the step's metrics (token-weighted)."""
    from mmrl.logprobs import completion_logprobs

    g = config.grpo
    mask = batch["completion_mask"].float()  # (B, T)
    logps, entropy = completion_logprobs(
        model, batch["prompt_inputs"], batch["completion_ids"], batch["completion_mask"],
        temperature=config.rollout.temperature, return_entropy=True, share_prompt=config.rollout.share_prompt,
    )  # fmt: skip
    old = logps.detach() if old_logps is None else old_logps  # one iteration: rho = 1 but its gradient is A
    terms = grpo.per_token_loss(
        logps, old, advantages, mask, epsilon_low=g.epsilon_low, epsilon_high=g.epsilon_high,
        level=g.importance_sampling_level, beta=g.beta, ref_logps=ref_logps, kl_bias_correction=g.kl_bias_correction,
    )  # fmt: skip
    loss = grpo.aggregate_loss(
        terms.per_token_loss, mask, g.loss_type, num_micro_batches=num_micro_batches,
        max_completion_length=config.rollout.max_completion_length, global_num_tokens=global_num_tokens,
        num_processes=num_processes,
    )  # fmt: skip
    with torch.no_grad():
        adv = advantages.unsqueeze(-1)
        low = (terms.ratio < 1 - g.epsilon_low) & (adv < 0)
        high = (terms.ratio > 1 + g.epsilon_high) & (adv > 0)
        weight = mask if terms.ratio.shape[-1] != 1 else torch.ones_like(terms.ratio)  # sequence level: per sequence
        stats = {
            "tokens": mask.sum(),
            "entropy": (entropy * mask).sum(),
            "kl": (terms.per_token_kl * mask).sum() if terms.per_token_kl is not None else torch.zeros(()),
            "clip_units": weight.sum(),
            "clip/low": (low.float() * weight).sum(),
            "clip/high": (high.float() * weight).sum(),
            "clip/region": ((low | high).float() * weight).sum(),
        }
    return loss, stats


def _micro_batches(num_rows: int, size: int) -> list[list[int]]:
    return [list(range(start, min(start + size, num_rows))) for start in range(0, num_rows, size)]


@torch.no_grad()
def fixed_logps(ctx: Run, model: Any, batches: list[dict[str, Any]]) -> list[torch.Tensor]:
    """Log-probs of each micro-batch under a model that does not train now (old policy or reference)."""
    from mmrl.logprobs import completion_logprobs

    temperature, share = ctx.config.rollout.temperature, ctx.config.rollout.share_prompt
    return [
        completion_logprobs(
            model, b["prompt_inputs"], b["completion_ids"], b["completion_mask"], temperature, share_prompt=share
        )
        for b in batches
    ]


def reference_logps(ctx: Run, batches: list[dict[str, Any]]) -> list[torch.Tensor]:
    if ctx.ref_model is not None:
        return fixed_logps(ctx, ctx.ref_model, batches)
    # LoRA: the reference is the base model, i.e. the same model with its adapters switched off
    with ctx.accelerator.unwrap_model(ctx.model).disable_adapter():
        return fixed_logps(ctx, ctx.model, batches)


def policy_update(
    ctx: Run, batches: list[dict[str, Any]], advantages: list[torch.Tensor], old: list | None, ref: list | None
) -> dict[str, float]:
    """`grpo.num_iterations` optimiser steps over the step's micro-batches; returns the update's metrics."""
    acc, cfg = ctx.accelerator, ctx.config
    local_tokens = sum(float(b["completion_mask"].sum()) for b in batches)
    global_tokens = float(_all_reduce(acc, torch.tensor([local_tokens], dtype=torch.float64)).item())
    totals: dict[str, float] = {}
    loss_sum, grad_norm, skipped = 0.0, math.nan, 0
    for _ in range(cfg.grpo.num_iterations):
        iteration_loss = 0.0
        for k, batch in enumerate(batches):
            # gradients are synchronised across processes only at the last micro-batch
            sync = contextlib.nullcontext() if k == len(batches) - 1 else acc.no_sync(ctx.model)
            with sync:
                loss, stats = micro_batch_loss(
                    ctx.model, batch, advantages[k], None if old is None else old[k], None if ref is None else ref[k],
                    cfg, num_micro_batches=len(batches), global_num_tokens=global_tokens,
                    num_processes=acc.num_processes,
                )  # fmt: skip
                acc.backward(loss)
            iteration_loss += float(loss.detach())
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + float(value)
        max_norm = cfg.training.max_grad_norm if cfg.training.max_grad_norm > 0 else float("inf")
        grad_norm = float(acc.clip_grad_norm_(ctx.trainable, max_norm))
        loss_sum += iteration_loss
        if math.isfinite(grad_norm) and math.isfinite(iteration_loss):
            ctx.optimizer.step()
        else:  # the weights stay as they were; a NaN loss makes the synchronised norm NaN on every process
            skipped += 1
            warnings.warn(
                f"non-finite loss ({iteration_loss}) or gradient norm ({grad_norm}): update skipped", stacklevel=1
            )
        ctx.optimizer.zero_grad(set_to_none=True)
    summed = _all_reduce(acc, torch.tensor([totals[k] for k in sorted(totals)], dtype=torch.float64))
    totals = dict(zip(sorted(totals), summed.tolist(), strict=True))
    iters = cfg.grpo.num_iterations
    out = {
        "loss": float(_all_reduce(acc, torch.tensor([loss_sum / iters])).item()) / acc.num_processes,
        "grad_norm": grad_norm,
        "updates_skipped": float(skipped),
        "entropy": totals["entropy"] / max(totals["tokens"], 1.0),
    }
    for key in ("clip/low", "clip/high", "clip/region"):
        out[key] = totals[key] / max(totals["clip_units"], 1.0)
    if cfg.grpo.beta > 0:
        out["kl"] = totals["kl"] / max(totals["tokens"], 1.0)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Setup: model, reference, optimizer, schedule, data, resume


@dataclass
class Run:
    """Everything the phases share; built once by `setup`."""

    config: TrainConfig
    accelerator: Any
    model: Any  # wrapped for distribution; forward passes that train go through it
    unwrapped_model: Any  # the model inside the distribution wrapper: what is saved, and (gathered) what generates
    ref_model: Any  # None when beta = 0 or with LoRA (adapters off instead)
    processor: Any
    family: str
    frame: Any
    optimizer: Any
    scheduler: Any
    trainable: list[torch.nn.Parameter]
    manifest: Any
    stream: Any
    run_dir: Path
    pad_token_id: int
    step: int = 0
    timers: dict[str, float] = field(default_factory=dict)
    vllm: Any = None  # mmrl.vllm_client.VLLMBackend when rollout.backend is "vllm"

    @property
    def device(self) -> torch.device:
        return self.accelerator.device


def lr_lambda(config: TrainConfig):
    """Multiplier of the base LR at training step s: linear warm-up, then constant, linear or cosine decay to 0."""
    warmup, total, kind = config.training.warmup_steps, config.training.max_steps, config.training.lr_scheduler

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "constant":
            return 1.0
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier


def build_optimizer(config: TrainConfig, model: Any) -> tuple[Any, list[torch.nn.Parameter]]:
    """AdamW; the vision tower (merger excluded) at `training.vision_lr_scale` times the base learning rate."""
    from mmrl.models import parameter_groups

    t = config.training
    groups = parameter_groups(model)
    vision = [p for _, p in groups["vision"] if p.requires_grad]
    rest = [p for key in ("merger", "language") for _, p in groups[key] if p.requires_grad]
    param_groups = [{"params": rest, "lr": t.learning_rate}]
    if vision:
        param_groups.append({"params": vision, "lr": t.learning_rate * t.vision_lr_scale})
    optimizer = torch.optim.AdamW(
        param_groups, lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2), weight_decay=t.weight_decay
    )
    return optimizer, rest + vision


def setup(config: TrainConfig) -> Run:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from mmrl import checkpoint_recovery
    from mmrl.boxes import FrameSpec
    from mmrl.data import SampleStream, read_manifest
    from mmrl.models import load_model_and_processor

    accelerator = Accelerator()
    set_seed(config.training.seed)  # the same initial state on every process (LoRA init, dropout)
    run_dir = Path(config.training.output_dir)
    check_resume_config(config, run_dir, accelerator.is_main_process)  # before any model loads
    if accelerator.is_main_process:
        ensure_train_manifest(config)
    accelerator.wait_for_everyone()
    manifest = read_manifest(config.data.train_manifest)
    if config.training.batch_size % accelerator.num_processes:
        raise UserError(
            f"training.batch_size={config.training.batch_size} must split evenly over "
            f"{accelerator.num_processes} processes"
        )
    model, processor, family = load_model_and_processor(config.model)
    model.to(accelerator.device)
    ref_model = None
    if config.grpo.beta > 0 and not config.model.lora:
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)  # the initial weights, before any resume
    optimizer, trainable = build_optimizer(config, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    model, optimizer = accelerator.prepare(model, optimizer)
    stream = SampleStream(
        len(manifest.samples), seed=config.training.seed, shuffle=config.data.shuffle,
        process_index=accelerator.process_index, num_processes=accelerator.num_processes,
    )  # fmt: skip
    run = Run(
        config, accelerator, model, accelerator.unwrap_model(model), ref_model, processor, family,
        FrameSpec.for_family(family, config.model.min_pixels, config.model.max_pixels), optimizer, scheduler,
        trainable, manifest, stream, run_dir, int(processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")),
    )  # fmt: skip
    found = None if config.training.resume != "auto" else checkpoint_recovery.resume(
        run_dir, model=run.unwrapped_model, optimizer=optimizer, scheduler=scheduler,
        process_index=accelerator.process_index,
    )  # fmt: skip  # the newest intact checkpoint; damaged ones are skipped with a warning
    if found is not None:
        latest, resumed = found
        run.step = resumed.step
        stream.load_state_dict(resumed.trainer_state["data"])
        if accelerator.is_main_process:
            print(f"mmrl: resumed from {latest} (step {run.step})")
    if config.rollout.backend == "vllm":
        from mmrl.vllm_client import connect

        run.vllm = connect(run)  # checks the server's pixel budget; pushes the weights when resumed
    return run


def save(run: Run) -> Path:
    from accelerate.utils import DistributedType

    from mmrl import checkpoint

    acc = run.accelerator
    sharded = acc.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)
    state = acc.get_state_dict(run.model) if sharded else None  # every process takes part in the gather
    return checkpoint.save_checkpoint(
        run.run_dir, run.step, model=run.unwrapped_model, optimizer=run.optimizer, scheduler=run.scheduler,
        trainer_state={"data": run.stream.state_dict()}, processor=run.processor,
        total_limit=run.config.training.save_total_limit, process_index=acc.process_index,
        is_main_process=acc.is_main_process, barrier=acc.wait_for_everyone, model_state_dict=state,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Metrics and evaluation


def rollout_metrics(run: Run, groups: list[Group], advantages: torch.Tensor, counts: dict[str, float]) -> dict:
    """Rewards, terms, advantages, lengths and counts over the global batch (gathered from every process)."""
    from accelerate.utils import gather_object

    from mmrl.metrics import mean_std

    local = [
        {"reward": float(g.rewards[i]), "terms": {k: v[i] for k, v in g.terms.items()},
         "length": int(g.completion_mask[i].sum()), "truncated": bool(g.truncated[i])}
        for g in groups for i in range(len(g.texts))
    ]  # fmt: skip
    rows = gather_object(local) if run.accelerator.num_processes > 1 else local
    adv = gather_object(advantages.tolist()) if run.accelerator.num_processes > 1 else advantages.tolist()
    out: dict[str, float] = {}
    out["reward"], out["reward_std"] = mean_std(r["reward"] for r in rows)
    for name in run.config.rewards.terms:
        out[f"reward/{name}"], out[f"reward/{name}/std"] = mean_std(r["terms"].get(name) for r in rows)
    out["advantage/mean"], out["advantage/std"] = mean_std(adv)
    out["advantage/abs_mean"] = sum(abs(a) for a in adv) / max(len(adv), 1)
    lengths = [r["length"] for r in rows]
    out["completion_length/mean"] = sum(lengths) / len(lengths)
    out["completion_length/min"], out["completion_length/max"] = float(min(lengths)), float(max(lengths))
    out["completion_truncated"] = sum(r["truncated"] for r in rows) / len(rows)
    summed = _all_reduce(run.accelerator, torch.tensor([counts[k] for k in sorted(counts)], dtype=torch.float64))
    counts = dict(zip(sorted(counts), summed.tolist(), strict=True))
    out["frac_zero_spread"] = counts["groups_zero_spread"] / max(counts["groups_generated"], 1.0)
    out["samples_skipped"] = counts["samples_skipped"]
    out["groups_generated"] = counts["groups_generated"]
    out["groups_used"] = len(rows) / run.config.rollout.num_generations
    return out


@torch.no_grad()
def evaluate(run: Run) -> dict[str, float]:
    """Greedy completions on the held-out manifest; mean reward and terms per variant (and over all)."""
    from accelerate.utils import gather_object
    from trl.models.utils import unwrap_model_for_generation

    from mmrl.data import read_manifest
    from mmrl.evaluate import greedy_completions, score_rows  # the one evaluation path (mmrl eval uses it too)
    from mmrl.metrics import mean_std
    from mmrl.prompts import load_image

    cfg, acc = run.config, run.accelerator
    manifest = read_manifest(cfg.data.eval_manifest)
    mine = manifest.samples[acc.process_index :: acc.num_processes]
    rows = []
    with unwrap_model_for_generation(run.model, acc) as model:
        for start in range(0, len(mine), cfg.training.batch_size):
            samples = mine[start : start + cfg.training.batch_size]
            images = [load_image(s, manifest.root) for s in samples]
            texts = greedy_completions(
                model, run.processor, samples, images, cfg.data, cfg.rollout.max_completion_length, len(samples),
                run.device,
            )  # fmt: skip
            for r in score_rows(texts, samples, cfg.rewards, run.frame):
                rows.append({"variant": r["variant"], "reward": r["reward"], **r["terms"], "accuracy": r["correct"],
                             "abstention_rate": r["abstained"], "format_rate": r["formatted"]})  # fmt: skip
    rows = gather_object(rows) if acc.num_processes > 1 else rows
    out: dict[str, float] = {}
    for variant in sorted({r["variant"] for r in rows}) + ["all"]:
        chosen = [r for r in rows if variant in ("all", r["variant"])]
        for key in ["reward", *cfg.rewards.terms, "accuracy", "abstention_rate", "format_rate"]:
            out[f"eval/{variant}/{key}"] = mean_std(r.get(key) for r in chosen)[0]
    return out


def samples_page(run: Run, groups: list[Group], advantages: list[torch.Tensor], max_rows: int = 32) -> Path:
    from mmrl.metrics import SampleRow, write_samples_page

    flat_adv = torch.cat(advantages).tolist()
    rows, r = [], 0
    for g in groups:
        for i, text in enumerate(g.texts):
            rows.append(SampleRow(
                g.sample.id, g.sample.variant.value, g.sample.question, g.sample.answer, text, float(g.rewards[i]),
                {k: v[i] for k, v in g.terms.items()}, flat_adv[r], g.image,
            ))  # fmt: skip
            r += 1
    return write_samples_page(run.run_dir, run.step, rows[:max_rows])


# ----------------------------------------------------------------------------------------------------------------
# The loop


def train(config: TrainConfig) -> Run:
    """Run GRPO as `config` says; returns the finished run (its model, step and folder)."""
    from tqdm import tqdm

    from mmrl.metrics import MetricsLogger

    run = setup(config)
    acc, cfg, G = run.accelerator, config, config.rollout.num_generations
    if acc.is_main_process:
        save_run_config(config, run.run_dir, run.step)  # an earlier segment's different config is kept
    logger = MetricsLogger(
        run.run_dir, tensorboard=cfg.logging.tensorboard, wandb=cfg.logging.wandb,
        wandb_project=cfg.logging.wandb_project, config=to_dict(config), is_main_process=acc.is_main_process,
        resume_step=run.step,
    )  # fmt: skip
    if run.manifest.rejects and acc.is_main_process:
        line, reason = run.manifest.rejects[0]
        warnings.warn(
            f"{len(run.manifest.rejects)} bad manifest lines skipped (first: line {line}: {reason})", stacklevel=1
        )
    progress = tqdm(total=cfg.training.max_steps, initial=run.step, disable=not acc.is_main_process, desc="grpo")
    metrics: dict[str, float] = {}
    while run.step < cfg.training.max_steps:
        step_start = time.perf_counter()
        run.timers = {"time/generate": 0.0, "time/rewards": 0.0, "time/logprobs": 0.0, "time/update": 0.0}

        # 1-2. rollout and rewards: contiguous groups of G completions per sample, scored
        groups, counts = collect_groups(run)
        rewards = torch.cat([g.rewards for g in groups])  # (B*G,)
        if _all_reduce(acc, torch.tensor([float(not torch.isfinite(rewards).all())]), "max").item() > 0:
            warnings.warn(f"step {run.step + 1}: non-finite reward, update skipped", stacklevel=1)
            run.step += 1
            run.scheduler.step()
            continue

        # 3. advantages, per group (or over the global batch's std)
        batch_std = None
        if cfg.grpo.scale_rewards == "batch" and acc.num_processes > 1:
            sums = _all_reduce(
                acc, torch.stack([rewards.sum(), (rewards**2).sum(), torch.tensor(rewards.numel())]).double()
            )
            total, squares, n = sums.tolist()
            batch_std = torch.tensor(math.sqrt(max(squares - total * total / n, 0.0) / max(n - 1, 1)))
        advantages = grpo.group_advantages(rewards, G, cfg.grpo.scale_rewards, batch_std=batch_std).advantages
        chunks = _micro_batches(len(rewards), cfg.training.micro_batch_size)
        batches = [group_rows(run, groups, rows, G) for rows in chunks]
        batch_advantages = [advantages[rows].to(run.device) for rows in chunks]

        # 4. old-policy and reference log-probs, through the same function as the policy's
        t0 = time.perf_counter()
        old = fixed_logps(run, run.model, batches) if cfg.grpo.num_iterations > 1 else None
        ref = reference_logps(run, batches) if cfg.grpo.beta > 0 else None
        run.timers["time/logprobs"] = time.perf_counter() - t0

        # 5. policy update: accumulate over micro-batches, clip, AdamW (num_iterations times)
        t0 = time.perf_counter()
        update = policy_update(run, batches, batch_advantages, old, ref)
        run.scheduler.step()
        run.step += 1
        run.timers["time/update"] = time.perf_counter() - t0
        if run.vllm is not None:  # the server samples the next step with the updated weights
            from mmrl.vllm_client import sync_weights

            t0 = time.perf_counter()
            sync_weights(run, run.vllm)
            run.timers["time/weight_sync"] = time.perf_counter() - t0

        # 6. log
        metrics = {**rollout_metrics(run, groups, advantages, counts), **update, **run.timers}
        metrics.setdefault("kl", math.nan)  # beta = 0: no reference, the KL is not computed (null in the file)
        metrics["lr"] = run.scheduler.get_last_lr()[0]
        metrics["time/step"] = time.perf_counter() - step_start
        if cfg.logging.samples_steps and run.step % cfg.logging.samples_steps == 0 and acc.is_main_process:
            samples_page(run, groups, batch_advantages)
        eval_every = cfg.training.eval_steps or cfg.training.max_steps  # 0: only at the end
        if cfg.data.eval_manifest and (run.step % eval_every == 0 or run.step == cfg.training.max_steps):
            metrics.update(evaluate(run))
        logger.log(run.step, metrics)
        progress.update(1)
        progress.set_postfix(reward=f"{metrics['reward']:.3f}", loss=f"{metrics['loss']:.4f}")

        # 7. checkpoint
        if cfg.training.save_steps and run.step % cfg.training.save_steps == 0:
            save(run)
    progress.close()
    if not (cfg.training.save_steps and run.step % cfg.training.save_steps == 0 and metrics):
        save(run)  # the end of the run, unless the loop just saved this step
    logger.close()
    acc.wait_for_everyone()
    return run
