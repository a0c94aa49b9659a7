"""A GRPO run's state and how it starts and saves: model, reference, optimiser, schedule, data, resume.

`setup` builds a `Run` (everything the phases share); `save` writes a checkpoint (`mmrl.io.checkpoint`: atomic;
`training.resume=auto` continues from the latest one, weights, optimiser, schedule, RNG and data position, exactly).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed

from data_builders.build import ensure_manifest
from mmrl.boxes import FrameSpec
from mmrl.config.schema import TrainConfig
from mmrl.data.manifest import Manifest, SampleStream, read_manifest
from mmrl.errors import UserError
from mmrl.io import checkpoint, recovery
from mmrl.io.resume_guard import check_resume_config
from mmrl.models.loading import load_model_and_processor
from mmrl.rl.optim import build_optimizer, build_scheduler
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
    step: int = 0
    timers: dict[str, float] = field(default_factory=dict)
    vllm: Any = None  # the vLLM backend (mmrl.rollout.vllm: server, or colocated) when rollout.backend is vllm*

    @property
    def device(self) -> torch.device:
        return self.accelerator.device


def setup(config: TrainConfig) -> Run:
    accelerator = Accelerator()
    set_seed(config.training.seed)  # the same initial state on every process (LoRA init, dropout)
    run_dir = Path(config.training.output_dir)
    check_resume_config(config, run_dir, accelerator.is_main_process)  # before any model loads
    if accelerator.is_main_process:  # configs/debug_tiny.yaml builds its synthetic manifest on first use
        ensure_manifest(config.data.train_manifest, config.training.build_config)
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
    optimizer, trainable = build_optimizer(config.training, model)
    scheduler = build_scheduler(config.training, optimizer)
    model, optimizer = accelerator.prepare(model, optimizer)
    stream = SampleStream(
        len(manifest.samples), seed=config.training.seed, shuffle=config.data.shuffle,
        process_index=accelerator.process_index, num_processes=accelerator.num_processes,
    )  # fmt: skip
    run = Run(
        config, accelerator, model, accelerator.unwrap_model(model), ref_model, processor, family,
        FrameSpec.for_family(family, config.model.min_pixels, config.model.max_pixels), optimizer, scheduler,
        trainable, manifest, stream, run_dir,
        int(processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")),
    )  # fmt: skip
    # the newest intact checkpoint; damaged ones are skipped with a warning
    found = None if config.training.resume != "auto" else recovery.resume(
        run_dir, model=run.unwrapped_model, optimizer=optimizer, scheduler=scheduler,
        process_index=accelerator.process_index,
    )  # fmt: skip
    if found is not None:
        latest, resumed = found
        run.step = resumed.step
        stream.load_state_dict(resumed.trainer_state["data"])
        if accelerator.is_main_process:
            print(f"mmrl: resumed from {latest} (step {run.step})")
    if config.rollout.backend != "hf":
        run.vllm = connect(run)  # server: checks its pixel budget; colocated: starts the engine; resumed: weights
    return run


def save(run: Run) -> Path:
    acc = run.accelerator
    sharded = acc.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)
    state = acc.get_state_dict(run.model) if sharded else None  # every process takes part in the gather
    return checkpoint.save_checkpoint(
        run.run_dir, run.step, model=run.unwrapped_model, optimizer=run.optimizer, scheduler=run.scheduler,
        trainer_state={"data": run.stream.state_dict()}, processor=run.processor,
        total_limit=run.config.training.save_total_limit, process_index=acc.process_index,
        is_main_process=acc.is_main_process, barrier=acc.wait_for_everyone, model_state_dict=state,
    )  # fmt: skip
