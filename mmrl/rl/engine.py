"""What GRPO (`mmrl.rl.update`, `mmrl.rl.run`) and SFT (`mmrl.rl.sft`) share about the engine a run trains on:
one optimiser step over a step's micro-batches, the run's checkpoints with every rank's state, resume, run_info.

One optimiser step per training step whatever the engine. DDP: gradients accumulate over the micro-batches and are
synchronised at the last one only; then clipping at `max_grad_norm` and the step, skipped (on every process alike,
the norm being synchronised) when the loss or the norm is not finite. DeepSpeed owns its step: it is told the
accumulation boundary (the last pass), steps once there, clips (its config, `mmrl.rl.dist.configure_deepspeed`) and
skips a step whose gradients are not finite on any rank. Lockstep: every process runs the same `passes`; a pass that
is not real (a process with fewer micro-batches repeating its last one) counts with zero weight.

Checkpoints under DeepSpeed / FSDP: the consolidated weights in `model/` (gathered from every rank), and every rank's
optimiser shard, weights and RNG through Accelerate's `save_state` in `accelerate/` inside the same atomic folder,
written before the completion marker so its checksums cover them; resume restores them with `load_state`.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType

from mmrl.io import checkpoint, recovery
from mmrl.rl.dist import engine_name, is_sharded

ENGINE_STATE = "accelerate"  # the engine's per-rank state inside a checkpoint folder (DeepSpeed / FSDP)


@dataclass
class Stepped:
    loss: float  # the sum of the real passes' losses
    grad_norm: float  # after synchronisation (NaN when the engine skipped the step)
    applied: bool  # whether the optimiser stepped


def accumulate_and_step(
    accelerator: Any,
    model: Any,
    optimizer: Any,
    trainable: list[torch.nn.Parameter],
    max_grad_norm: float,
    passes: int,
    micro_loss: Callable[[int], tuple[torch.Tensor, bool]],
) -> Stepped:
    """Backward through `micro_loss(k)` -> (loss, real) for k < `passes`, then one optimiser step (see above)."""
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    total = 0.0
    for k in range(passes):
        last = k == passes - 1
        # gradients are synchronised across processes only at the last micro-batch (DeepSpeed: its boundary)
        sync = contextlib.nullcontext() if last or deepspeed else accelerator.no_sync(model)
        with sync:
            loss, real = micro_loss(k)
            if not real:  # a lockstep pass: the same collectives as the other ranks, no gradient
                loss = loss * 0.0
            if deepspeed:
                accelerator.sync_gradients = last  # the engine steps at the boundary only
                accelerator.backward(loss, scale_wrt_gas=False)  # mmrl's losses are already averaged
            else:
                accelerator.backward(loss)
        if real:
            total += float(loss.detach())
    if deepspeed:
        accelerator.sync_gradients = True
        applied = bool(model.was_step_applied())
        norm = model.get_global_grad_norm()
        grad_norm = float(norm) if norm is not None and applied else math.nan
    else:
        max_norm = max_grad_norm if max_grad_norm > 0 else float("inf")
        grad_norm = float(accelerator.clip_grad_norm_(trainable, max_norm))
        applied = math.isfinite(grad_norm) and math.isfinite(total)
        if applied:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if not applied:  # the weights stay as they were; a NaN loss makes the synchronised norm NaN on every process
        warnings.warn(f"non-finite loss ({total}) or gradient norm ({grad_norm}): update skipped", stacklevel=2)
    return Stepped(total, grad_norm, applied)


def save_run_checkpoint(
    accelerator: Any,
    run_dir: Path,
    step: int,
    *,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    trainer_state: dict[str, Any],
    processor: Any,
    total_limit: int,
) -> Path:
    """Checkpoint `step` of a run; every process calls this. `model` is the prepared (wrapped) model."""
    sharded = is_sharded(accelerator)
    state = accelerator.get_state_dict(model) if sharded else None  # every process takes part in the gather

    def engine_state(folder: Path) -> None:  # every rank writes its own shard of the optimiser (and weights)
        accelerator.save_state(str(folder / ENGINE_STATE))

    return checkpoint.save_checkpoint(
        run_dir, step, model=accelerator.unwrap_model(model), optimizer=None if sharded else optimizer,
        scheduler=scheduler, trainer_state=trainer_state, processor=processor, total_limit=total_limit,
        process_index=accelerator.process_index, is_main_process=accelerator.is_main_process,
        barrier=accelerator.wait_for_everyone, model_state_dict=state,
        extra_state=engine_state if sharded else None,
    )  # fmt: skip


def resume_run(accelerator: Any, run_dir: Path, *, model: Any, optimizer: Any, scheduler: Any) -> tuple | None:
    """(checkpoint folder, its state) of the newest intact checkpoint, restored into `model` (prepared) and the
    optimiser and schedule; damaged ones are skipped with a warning; None when there is none."""
    sharded = is_sharded(accelerator)
    found = recovery.resume(
        run_dir, model=None if sharded else accelerator.unwrap_model(model), optimizer=None if sharded else optimizer,
        scheduler=scheduler, process_index=accelerator.process_index,
    )  # fmt: skip
    if found is not None and sharded:  # the weights and every rank's optimiser shard from the engine state
        accelerator.load_state(str(found[0] / ENGINE_STATE))
    return found


def write_run_info(accelerator: Any, run_dir: Path, model: Any, passes: int, step: int) -> Path:
    """`run_info.json`: which engine ran, on how many processes and devices, from which step."""
    info = {
        "engine": engine_name(accelerator),
        "num_processes": accelerator.num_processes,
        "device": accelerator.device.type,
        "mixed_precision": accelerator.mixed_precision,
        "model_dtype": str(next(accelerator.unwrap_model(model).parameters()).dtype).removeprefix("torch."),
        "passes_per_step": passes,
        "started_at_step": step,
    }
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        keys = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping")
        info["deepspeed"] = {k: ds.get(k) for k in keys} | {"zero_stage": ds["zero_optimization"]["stage"]}
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "run_info.json"
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return path
