"""A GRPO run's state and how it starts and saves: model, reference, optimiser, schedule, data, resume.

`setup` builds a `Run` (everything the phases share); `save` writes a checkpoint (`mmrl.io.checkpoint`: atomic;
`training.resume=auto` continues from the latest one, weights, optimiser, schedule, RNG and data position, exactly).

Engines (`mmrl.rl.dist`): DDP, DeepSpeed ZeRO-2/3 and FSDP through Accelerate. Under DeepSpeed the engine's
micro-batch size, gradient accumulation (the passes of one training step: one optimiser step per step) and clipping
come from mmrl's config. The reference model is a copy of the initial weights in the training dtype, prepared like
the policy: sharded under ZeRO-3 / FSDP, a plain replica under ZeRO-2 (TRL's `prepare_deepspeed` / `prepare_fsdp`);
with LoRA it is the policy with its adapters off. Under DeepSpeed / FSDP a checkpoint also holds every rank's
engine state (`accelerator.save_state` into `checkpoint-N/accelerate/`, inside the atomic folder, before its
marker, so the marker's checksums cover it); `model/` holds the consolidated full weights. `run_info.json` in the
run folder records the engine and the processes that ran.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType, set_seed
from trl.models.utils import prepare_deepspeed, prepare_fsdp

from data_builders.build import ensure_manifest
from mmrl.boxes import FrameSpec
from mmrl.config.schema import TrainConfig
from mmrl.data.manifest import Manifest, SampleStream, read_manifest
from mmrl.errors import UserError
from mmrl.io.resume_guard import check_resume_config
from mmrl.models.loading import load_model_and_processor
from mmrl.rl.dist import configure_deepspeed, is_sharded, make_accelerator
from mmrl.rl.engine import resume_run, save_run_checkpoint, write_run_info
from mmrl.rl.optim import build_optimizer, build_scheduler
from mmrl.rl.update import passes_per_step
from mmrl.rollout.vllm import connect


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
    frame: FrameSpec
    optimizer: Any
    scheduler: Any
    trainable: list[torch.nn.Parameter]
    manifest: Manifest
    stream: SampleStream
    run_dir: Path
    pad_token_id: int
    passes: int = 1  # micro-batches every process runs per phase (lockstep; DeepSpeed's gradient accumulation)
    step: int = 0
    timers: dict[str, float] = field(default_factory=dict)
    vllm: Any = None  # the vLLM backend (mmrl.rollout.vllm: server, or colocated) when rollout.backend is vllm*

    @property
    def device(self) -> torch.device:
        return self.accelerator.device


def setup(config: TrainConfig) -> Run:
    accelerator = make_accelerator()
    set_seed(config.training.seed)  # the same initial state on every process (LoRA init, dropout)
    run_dir = Path(config.training.output_dir)
    check_resume_config(config, run_dir, accelerator.is_main_process)  # before any model loads
    if accelerator.is_main_process:  # configs/debug_tiny.yaml builds its synthetic manifest on first use
        ensure_manifest(config.data.train_manifest, config.training.build_config)
    accelerator.wait_for_everyone()
    manifest = read_manifest(config.data.train_manifest)
    t = config.training
    if t.batch_size % accelerator.num_processes:
        raise UserError(
            f"training.batch_size={t.batch_size} must split evenly over {accelerator.num_processes} processes"
        )
    passes = passes_per_step(
        t.batch_size, config.rollout.num_generations, t.micro_batch_size, accelerator.num_processes
    )
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        configure_deepspeed(accelerator, t.micro_batch_size, passes, t.max_grad_norm)
    model, processor, family = load_model_and_processor(config.model)
    model.to(accelerator.device)
    ref_model = reference_model(config, model, accelerator)
    optimizer, trainable = build_optimizer(t, model)
    scheduler = build_scheduler(t, optimizer)
    model, optimizer = accelerator.prepare(model, optimizer)
    if ref_model is not None and accelerator.distributed_type == DistributedType.DEEPSPEED:
        ref_model = prepare_deepspeed(ref_model, accelerator)  # after the policy: its config is complete then
    elif ref_model is not None and accelerator.distributed_type == DistributedType.FSDP:
        ref_model = prepare_fsdp(ref_model, accelerator).eval()
    stream = SampleStream(
        len(manifest.samples), seed=t.seed, shuffle=config.data.shuffle,
        process_index=accelerator.process_index, num_processes=accelerator.num_processes,
    )  # fmt: skip
    run = Run(
        config, accelerator, model, accelerator.unwrap_model(model), ref_model, processor, family,
        FrameSpec.for_family(family, config.model.min_pixels, config.model.max_pixels), optimizer, scheduler,
        trainable, manifest, stream, run_dir,
        int(processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")), passes,
    )  # fmt: skip
    found = (
        None
        if t.resume != "auto"
        else resume_run(accelerator, run_dir, model=model, optimizer=optimizer, scheduler=scheduler)
    )
    if found is not None:
        latest, resumed = found
        run.step = resumed.step
        stream.load_state_dict(resumed.trainer_state["data"])
        if accelerator.is_main_process:
            print(f"mmrl: resumed from {latest} (step {run.step})")
    if accelerator.is_main_process:
        write_run_info(accelerator, run_dir, model, passes, run.step)
    if config.rollout.backend != "hf":
        run.vllm = connect(run)  # server: checks its pixel budget; colocated: starts the engine; resumed: weights
    return run


def reference_model(config: TrainConfig, model: Any, accelerator: Any) -> Any:
    """The initial weights, frozen, before any resume; None when beta = 0 or with LoRA (adapters off instead).

    Sharded engines load it again: under ZeRO-3 the policy loads already partitioned (`zero.Init`), so a copy of it
    would hold empty tensors; `prepare_deepspeed` / `prepare_fsdp` shard it afterwards."""
    if config.grpo.beta == 0 or config.model.lora:
        return None
    if is_sharded(accelerator):
        ref = load_model_and_processor(config.model)[0].to(accelerator.device)
    else:
        ref = copy.deepcopy(model)
    return ref.eval().requires_grad_(False)


def save(run: Run) -> Path:
    return save_run_checkpoint(
        run.accelerator,
        run.run_dir,
        run.step,
        model=run.model,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        trainer_state={"data": run.stream.state_dict()},
        processor=run.processor,
        total_limit=run.config.training.save_total_limit,
    )
