"""Phases 4-5 of a GRPO step: old-policy and reference log-probs, then the policy update.

All three log-prob passes go through the one function `mmrl.models.logprobs.completion_logprobs`, with the same
image inputs. The update runs `grpo.num_iterations` optimiser steps over the step's micro-batches: per micro-batch
the clipped surrogate (per token, or per sequence for GSPO) plus beta * k3 KL, reduced by `grpo.loss_type`
(`mmrl.rl.algo`); gradients accumulate over the micro-batches (synchronised across processes only on the last),
are clipped to `training.max_grad_norm`, and AdamW steps; a non-finite loss or gradient norm skips the step on every
process alike (the norm is computed after the gradients are synchronised).

Lockstep: every process runs `passes_per_step` forward (and backward) passes in each phase, whatever it kept: a
process with fewer micro-batches (skipped samples, a refill that came short) repeats its last one with zero weight.
ZeRO-3 and FSDP gather weights inside every forward and DDP broadcasts buffers, so a rank that ran fewer passes
would leave the others waiting forever.

Under DeepSpeed the engine owns the optimiser step: it is told the accumulation boundary (the last pass of an
iteration), steps once there, clips at `training.max_grad_norm` (set in its config by `mmrl.rl.run`) and skips a
step whose gradients are not finite on any rank (its overflow check is all-reduced).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from accelerate.utils import DistributedType

from mmrl.models.logprobs import completion_logprobs
from mmrl.rl import algo
from mmrl.rl.dist import all_reduce
from mmrl.rl.engine import accumulate_and_step


def micro_batches(num_rows: int, size: int) -> list[list[int]]:
    """Row indices of each micro-batch: consecutive runs of `size` rows (the last may be shorter).

    >>> micro_batches(5, 2)
    [[0, 1], [2, 3], [4]]
    """
    return [list(range(start, min(start + size, num_rows))) for start in range(0, num_rows, size)]


def passes_per_step(batch_size: int, num_generations: int, micro_batch_size: int, num_processes: int) -> int:
    """Micro-batches of a full share of the global batch: what every process runs per phase (and DeepSpeed's
    gradient accumulation). A process that kept fewer completions has fewer micro-batches, never more.

    >>> passes_per_step(batch_size=4, num_generations=4, micro_batch_size=3, num_processes=2)  # 8 rows -> 3 + 3 + 2
    3
    """
    return math.ceil(batch_size // num_processes * num_generations / micro_batch_size)


def micro_batch_loss(
    model: Any,
    batch: dict[str, Any],
    advantages: torch.Tensor,
    old_logps: torch.Tensor | None,
    ref_logps: torch.Tensor | None,
    config: Any,
    *,
    num_micro_batches: int,
    global_num_tokens: float,
    num_processes: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The scalar to call backward on for one micro-batch, and sums for the step's metrics (token-weighted)."""
    g = config.grpo
    mask = batch["completion_mask"].float()  # (B, T)
    logps, entropy = completion_logprobs(
        model, batch["prompt_inputs"], batch["completion_ids"], batch["completion_mask"],
        temperature=config.rollout.temperature, return_entropy=True, share_prompt=config.rollout.share_prompt,
    )  # fmt: skip
    old = logps.detach() if old_logps is None else old_logps  # one iteration: rho = 1 but its gradient is A
    weights, r = None, config.rollout
    if "sampling_logps" in batch:  # vLLM sampled: weight by trainer (old policy) / sampler probability, as TRL does
        weights = algo.sampler_correction(old, batch["sampling_logps"], mask, r.vllm_importance_sampling_mode,
                                          r.vllm_importance_sampling_cap)  # fmt: skip
    terms = algo.per_token_loss(
        logps, old, advantages, mask, epsilon_low=g.epsilon_low, epsilon_high=g.epsilon_high,
        level=g.importance_sampling_level, beta=g.beta, ref_logps=ref_logps, kl_bias_correction=g.kl_bias_correction,
        sampler_weights=weights,
    )  # fmt: skip
    loss = algo.aggregate_loss(
        terms.per_token_loss, mask, g.loss_type, num_micro_batches=num_micro_batches,
        max_completion_length=config.rollout.max_completion_length, global_num_tokens=global_num_tokens,
        num_processes=num_processes,
    )  # fmt: skip
    with torch.no_grad():
        low, high = algo.clip_masks(terms.ratio, advantages, g.epsilon_low, g.epsilon_high)
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


@torch.no_grad()
def fixed_logps(run: Any, model: Any, batches: list[dict[str, Any]]) -> list[torch.Tensor]:
    """Log-probs of each micro-batch under a model that does not train now (old policy or reference); runs
    `run.passes` forwards in all (lockstep), the extra ones discarded."""
    temperature, share = run.config.rollout.temperature, run.config.rollout.share_prompt
    out = []
    for k in range(max(run.passes, len(batches))):
        b = batches[min(k, len(batches) - 1)]
        logps = completion_logprobs(
            model, b["prompt_inputs"], b["completion_ids"], b["completion_mask"], temperature, share_prompt=share
        )
        if k < len(batches):
            out.append(logps)
    return out


def reference_logps(run: Any, batches: list[dict[str, Any]]) -> list[torch.Tensor]:
    """Reference log-probs in the policy's precision (under the same autocast as the policy's forwards)."""
    with run.accelerator.autocast():
        if run.ref_model is not None:
            return fixed_logps(run, run.ref_model, batches)
        # LoRA: the reference is the base model, i.e. the same model with its adapters switched off
        with run.accelerator.unwrap_model(run.model).disable_adapter():
            return fixed_logps(run, run.model, batches)


def policy_update(
    run: Any, batches: list[dict[str, Any]], advantages: list[torch.Tensor], old: list | None, ref: list | None
) -> dict[str, float]:
    """`grpo.num_iterations` optimiser steps over the step's micro-batches; returns the update's metrics."""
    acc, cfg = run.accelerator, run.config
    deepspeed = acc.distributed_type == DistributedType.DEEPSPEED
    passes = max(run.passes, len(batches))  # the same on every process (lockstep)
    local_tokens = sum(float(b["completion_mask"].sum()) for b in batches)
    global_tokens = float(all_reduce(acc, torch.tensor([local_tokens], dtype=torch.float64)).item())
    totals: dict[str, float] = {}
    loss_sum, grad_norm, skipped = 0.0, math.nan, 0
    engine_steps = run.model.global_steps if deepspeed else 0
    for _ in range(cfg.grpo.num_iterations):

        def micro_loss(k: int) -> tuple[torch.Tensor, bool]:
            j = min(k, len(batches) - 1)  # past its own micro-batches a process repeats its last one (lockstep)
            loss, stats = micro_batch_loss(
                run.model, batches[j], advantages[j], None if old is None else old[j], None if ref is None else ref[j],
                cfg, num_micro_batches=len(batches), global_num_tokens=global_tokens, num_processes=acc.num_processes,
            )  # fmt: skip
            if k < len(batches):
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + float(value)
            return loss, k < len(batches)

        stepped = accumulate_and_step(
            acc, run.model, run.optimizer, run.trainable, cfg.training.max_grad_norm, passes, micro_loss
        )
        loss_sum += stepped.loss
        grad_norm = stepped.grad_norm
        skipped += not stepped.applied
    optimizer_steps = run.model.global_steps - engine_steps if deepspeed else cfg.grpo.num_iterations
    summed = all_reduce(acc, torch.tensor([totals[k] for k in sorted(totals)], dtype=torch.float64))
    totals = dict(zip(sorted(totals), summed.tolist(), strict=True))
    iters = cfg.grpo.num_iterations
    out = {
        "loss": float(all_reduce(acc, torch.tensor([loss_sum / iters])).item()) / acc.num_processes,
        "grad_norm": grad_norm,
        "updates_skipped": float(skipped),
        "optimizer_steps": float(optimizer_steps),  # DeepSpeed: counted by the engine itself
        "entropy": totals["entropy"] / max(totals["tokens"], 1.0),
    }
    for key in ("clip/low", "clip/high", "clip/region"):
        out[key] = totals[key] / max(totals["clip_units"], 1.0)
    if cfg.grpo.beta > 0:
        out["kl"] = totals["kl"] / max(totals["tokens"], 1.0)
    return out
