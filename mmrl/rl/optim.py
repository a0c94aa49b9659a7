"""The optimiser and learning-rate schedule, shared by GRPO (`mmrl.rl.loop`) and SFT (`mmrl.rl.sft`)."""

from __future__ import annotations

import math
from typing import Any

import torch

from mmrl.models.loading import parameter_groups


def lr_lambda(training: Any):
    """Multiplier of the base LR at training step s: linear warm-up, then constant, linear or cosine decay to 0.

    >>> from mmrl.config.schema import TrainingConfig
    >>> f = lr_lambda(TrainingConfig(warmup_steps=1, max_steps=3, lr_scheduler="linear"))
    >>> [round(f(s), 3) for s in range(4)]
    [0.5, 1.0, 0.5, 0.0]
    """
    warmup, total, kind = training.warmup_steps, training.max_steps, training.lr_scheduler

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "constant":
            return 1.0
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier


def build_optimizer(training: Any, model: Any) -> tuple[Any, list[torch.nn.Parameter]]:
    """AdamW; the vision tower (merger excluded) at `training.vision_lr_scale` times the base learning rate.

    Returns the optimiser and its parameters (what gradient clipping acts on)."""
    groups = parameter_groups(model)
    vision = [p for _, p in groups["vision"] if p.requires_grad]
    rest = [p for key in ("merger", "language") for _, p in groups[key] if p.requires_grad]
    param_groups = [{"params": rest, "lr": training.learning_rate}]
    if vision:
        param_groups.append({"params": vision, "lr": training.learning_rate * training.vision_lr_scale})
    optimizer = torch.optim.AdamW(
        param_groups,
        lr=training.learning_rate,
        betas=(training.adam_beta1, training.adam_beta2),
        weight_decay=training.weight_decay,
    )
    return optimizer, rest + vision


def build_scheduler(training: Any, optimizer: Any) -> Any:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(training))
