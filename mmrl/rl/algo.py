"""GRPO maths: pure functions on tensors, no model, no config object, no I/O.

The definitions match TRL 1.16's `GRPOTrainer` (`_generate_and_score_completions` for the advantages,
`_compute_loss` for the loss); `tests/trainer/test_grpo_parity.py` checks that against TRL itself.

Shapes: N completions in a batch, made as N // G contiguous groups of G completions of one sample;
B completions in a micro-batch; T completion tokens (right-padded, `mask` is 1 on real tokens).

- advantages: A_i = (r_i - mean_group(r)) / (std + 1e-4), with std the group's (scale "group"), the whole
  batch's (scale "batch") or no division at all (scale "none"); std is the unbiased (Bessel) estimate.
- ratio: token level rho_t = exp(logp_t - old_logp_t); sequence level (GSPO) one rho per sequence,
  exp(mean over the sequence's tokens of (logp_t - old_logp_t)).
- per-token loss: -min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A) + beta * rho * k3, with
  k3 = exp(ref - logp) - (ref - logp) - 1 (Schulman's unbiased, non-negative KL estimator) and the factor rho only
  with `kl_bias_correction` (TRL 1.16's default).
- sampler mismatch (vLLM, TRL's `vllm_importance_sampling_*`): w = exp(trainer logp - sampler logp) per token, or
  exp of its sum over the sequence; `*_truncate` caps w at C, `*_mask` sets w above C to 0; the policy term of the
  per-token loss (not the KL) is multiplied by w, which carries no gradient.
- aggregation over a micro-batch, with M micro-batches accumulated into one optimiser step:
  grpo: mean over sequences of each sequence's token mean, / M;  bnpo: token sum / the micro-batch's tokens, / M;
  dr_grpo: token sum / (B * max_completion_length), / M;  dapo: token sum / (this process's share of the tokens of
  the whole global batch, all micro-batches and processes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
RewardScale = Literal["group", "batch", "none"]
ImportanceLevel = Literal["token", "sequence"]

# TRL adds this to the std before dividing; a zero-spread group then gets advantages of exactly 0
STD_EPS = 1e-4


@dataclass(frozen=True)
class Advantages:
    advantages: torch.Tensor  # (N,)
    group_mean: torch.Tensor  # (N // G,)
    group_std: torch.Tensor  # (N // G,)
    zero_spread: torch.Tensor  # (N // G,) bool: every completion of the group got the same reward


def group_advantages(
    rewards: torch.Tensor, num_generations: int, scale: RewardScale = "group", batch_std: torch.Tensor | None = None
) -> Advantages:
    """Advantages of contiguous groups of `num_generations` completions.

    `batch_std` (scale "batch") is the std of the whole global batch when `rewards` is one process's part of it.

    >>> adv = group_advantages(torch.tensor([1.0, 0.0, 2.0, 2.0]), 2)
    >>> [round(a, 3) for a in adv.advantages.tolist()], adv.zero_spread.tolist()  # 0.5 / (0.7071 + 1e-4)
    ([0.707, -0.707, 0.0, 0.0], [False, True])
    """
    if rewards.dim() != 1 or rewards.numel() % num_generations != 0:
        raise ValueError(f"rewards must be (N,) with N a multiple of {num_generations}, got {tuple(rewards.shape)}")
    grouped = rewards.view(-1, num_generations)  # (N // G, G)
    group_mean = grouped.mean(dim=1)
    group_std = grouped.std(dim=1) if num_generations > 1 else torch.zeros_like(group_mean)
    advantages = rewards - group_mean.repeat_interleave(num_generations)  # (N,)
    if scale == "group":
        advantages = advantages / (group_std.repeat_interleave(num_generations) + STD_EPS)
    elif scale == "batch":
        if batch_std is None:
            batch_std = rewards.std() if rewards.numel() > 1 else torch.zeros((), dtype=rewards.dtype)
        advantages = advantages / (batch_std + STD_EPS)
    elif scale != "none":
        raise ValueError(f"unknown reward scale {scale!r} (valid: group, batch, none)")
    zero_spread = torch.isclose(group_std, torch.zeros_like(group_std))
    return Advantages(advantages, group_mean, group_std, zero_spread)


def importance_log_weights(
    logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor, level: ImportanceLevel = "token"
) -> torch.Tensor:
    """log rho: (B, T) at token level; (B, 1) at sequence level (GSPO: the mean token log-ratio)."""
    log_ratio = logps - old_logps  # (B, T)
    if level == "token":
        return log_ratio
    if level == "sequence":
        return ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)  # (B, 1)
    raise ValueError(f"unknown importance sampling level {level!r} (valid: token, sequence)")


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference): exp(d) - d - 1 with d = ref - logp; always >= 0.

    >>> round(k3_kl(torch.tensor([0.0]), torch.tensor([-1.0])).item(), 4)  # e^-1 + 1 - 1
    0.3679
    """
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


@dataclass(frozen=True)
class TokenLoss:
    per_token_loss: torch.Tensor  # (B, T), or (B, 1) at sequence level with beta = 0
    ratio: torch.Tensor  # (B, T) or (B, 1): rho before clipping
    per_token_kl: torch.Tensor | None  # (B, T) when beta > 0


def per_token_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon_low: float,
    epsilon_high: float,
    level: ImportanceLevel = "token",
    beta: float = 0.0,
    ref_logps: torch.Tensor | None = None,
    kl_bias_correction: bool = True,
    sampler_weights: torch.Tensor | None = None,
) -> TokenLoss:
    """The clipped surrogate (negated, to minimise) plus beta * k3 KL, before any aggregation.

    `kl_bias_correction` (TRL's `use_bias_correction_kl`, on by default in TRL 1.16) multiplies the KL by rho, the
    importance ratio, gradient included: the samples come from the old policy, so this makes the KL term's gradient
    unbiased; its value is unchanged on-policy (rho = 1) but its gradient is not. `sampler_weights`
    (`sampler_correction`) multiply the surrogate, before the KL is added, as TRL does."""
    advantages = advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages  # (B, 1)
    ratio = torch.exp(importance_log_weights(logps, old_logps, mask, level))
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    loss = -torch.min(ratio * advantages, clipped * advantages)
    if sampler_weights is not None:  # (B, T) or (B, 1): the vLLM sampler's mismatch correction, policy term only
        loss = loss * sampler_weights
    kl = None
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta > 0 needs ref_logps")
        kl = k3_kl(logps, ref_logps)
        if kl_bias_correction:
            kl = kl * ratio
        loss = loss + beta * kl
    return TokenLoss(loss, ratio, kl)


def aggregate_loss(
    token_loss: torch.Tensor,
    mask: torch.Tensor,
    loss_type: LossType,
    *,
    num_micro_batches: int = 1,
    max_completion_length: int | None = None,
    global_num_tokens: float | None = None,
    num_processes: int = 1,
) -> torch.Tensor:
    """Reduce a micro-batch's (B, T) per-token loss to the scalar to call backward on.

    Summing the returned values over the M micro-batches of a step (and averaging gradients over processes, as DDP
    does) gives the step's loss. `global_num_tokens` (dapo) counts the real completion tokens of the whole global
    batch, all processes; `max_completion_length` (dr_grpo) is the configured maximum, not the padded width.

    >>> loss = torch.tensor([[1.0, 3.0, 0.0], [2.0, 0.0, 0.0]]); mask = torch.tensor([[1.0, 1, 0], [1, 0, 0]])
    >>> [aggregate_loss(loss, mask, "grpo").item(), aggregate_loss(loss, mask, "bnpo").item()]  # (2 + 2)/2, 6/3
    [2.0, 2.0]
    >>> aggregate_loss(loss, mask, "dr_grpo", max_completion_length=4).item()  # 6 / (2 * 4)
    0.75
    >>> aggregate_loss(loss, mask, "dapo", global_num_tokens=12).item()  # 6 / 12
    0.5
    """
    masked = token_loss * mask  # (B, T); a (B, 1) sequence-level loss broadcasts over the tokens
    if loss_type == "grpo":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / num_micro_batches
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0) / num_micro_batches
    if loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ValueError("dr_grpo needs max_completion_length")
        return masked.sum() / (token_loss.size(0) * max_completion_length) / num_micro_batches
    if loss_type == "dapo":
        if global_num_tokens is None:
            raise ValueError("dapo needs global_num_tokens")
        return masked.sum() / (max(float(global_num_tokens), 1.0) / num_processes)
    raise ValueError(f"unknown loss type {loss_type!r} (valid: grpo, bnpo, dr_grpo, dapo)")


def clip_masks(
    ratio: torch.Tensor, advantages: torch.Tensor, epsilon_low: float, epsilon_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the clip removed the gradient (TRL's clip_ratio/low and /high): rho < 1 - eps_low with A < 0, and
    rho > 1 + eps_high with A > 0. `ratio` is (B, T) per token or (B, 1) per sequence; `advantages` is (B,).

    >>> low, high = clip_masks(torch.tensor([[0.5, 1.0, 1.5]]), torch.tensor([-1.0]), 0.2, 0.2)
    >>> low.tolist(), high.tolist()  # only 0.5 < 0.8 with A < 0; 1.5 > 1.2 needs A > 0
    ([[True, False, False]], [[False, False, False]])
    """
    adv = advantages.unsqueeze(-1)  # (B, 1)
    return (ratio < 1 - epsilon_low) & (adv < 0), (ratio > 1 + epsilon_high) & (adv > 0)


SamplerCorrection = Literal["token_truncate", "sequence_truncate", "token_mask", "sequence_mask"]


def sampler_correction(
    trainer_logps: torch.Tensor,
    sampler_logps: torch.Tensor,
    mask: torch.Tensor,
    mode: SamplerCorrection = "token_truncate",
    cap: float = 3.0,
) -> torch.Tensor:
    """Importance weights for completions sampled by another engine (vLLM) than the one that trains, detached.

    w = exp(trainer - sampler) per token (B, T), or exp(sum over the sequence's tokens) per sequence (B, 1);
    truncated at `cap`, or set to 0 above it (mask modes). Padding positions give log-ratio 0, and so does a NaN
    sampler log-prob (a server that sent none): weight 1, no correction. As TRL 1.16 computes it.

    >>> t = torch.tensor([[-1.0, -2.0, 0.0]]); s = torch.tensor([[-1.5, -0.5, -9.0]]); m = torch.tensor([[1.0, 1, 0]])
    >>> [round(w, 4) for w in sampler_correction(t, s, m).tolist()[0]]  # e^0.5, e^-1.5, padding
    [1.6487, 0.2231, 1.0]
    >>> round(sampler_correction(t, s, m, "sequence_truncate").item(), 4)  # e^(0.5 - 1.5) = e^-1
    0.3679
    >>> sampler_correction(t, s - 2.0, m, "token_mask").tolist()  # e^2.5 = 12.2 > 3 -> 0; e^0.5 = 1.65 stays
    [[0.0, 1.6487212181091309, 1.0]]
    """
    log_ratio = torch.nan_to_num((trainer_logps.detach() - sampler_logps) * mask, nan=0.0)  # (B, T)
    if mode.startswith("sequence"):
        log_ratio = log_ratio.sum(-1, keepdim=True)  # (B, 1)
    elif not mode.startswith("token"):
        raise ValueError(f"unknown sampler correction {mode!r}")
    weights = torch.exp(log_ratio)
    if mode.endswith("truncate"):
        return weights.clamp(max=cap)
    if mode.endswith("mask"):
        return weights.masked_fill(weights > cap, 0.0)
    raise ValueError(f"unknown sampler correction {mode!r}")
