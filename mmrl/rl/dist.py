"""The distribution engine and the collectives the phases share.

`make_accelerator` builds the one `Accelerator` of a run. Which engine runs comes from Accelerate's environment
(`accelerate launch --config_file configs/accelerate/<engine>.yaml`, or the variables `scripts/train.sh` exports
for CPU processes): DDP, DeepSpeed ZeRO-2/3 or FSDP. `MMRL_ENGINE`, when set (train.sh sets it), names the engine
that must run: anything else is one error line, never a silent fall-back to DDP.

DeepSpeed on CPU processes (tests, `MMRL_ACCELERATE=zero2 scripts/train.sh` without GPUs): Accelerate takes its
DeepSpeed path only when the process group is not forced onto the CPU (`cpu=True` turns it into MULTI_CPU), so the
group is asked for gloo instead. DeepSpeed's CPU accelerator also JIT-compiles its shared-memory all-reduce op in
every rank at start-up (about 90 s on 2 cores, racing for one build folder); that op serves only inference
all-reduce, so it is marked unavailable and gloo carries everything.

Collectives: every process calls them at the same points, in the same order.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, InitProcessGroupKwargs
from trl.models.utils import unwrap_model_for_generation

from mmrl.errors import UserError

ENGINES = ("single", "ddp", "zero2", "zero3", "fsdp")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def make_accelerator() -> Accelerator:
    """The run's Accelerator, on the engine Accelerate's environment names (checked against `MMRL_ENGINE`)."""
    requested = os.environ.get("MMRL_ENGINE")
    if requested is not None and requested not in ENGINES:
        raise UserError(f"MMRL_ENGINE must be one of {', '.join(ENGINES)}, got {requested!r}")
    kwargs: dict[str, Any] = {}
    if _env_flag("ACCELERATE_USE_DEEPSPEED") and not torch.cuda.is_available():
        try:
            import deepspeed.ops
        except ImportError:
            raise UserError("DeepSpeed is not installed: pip install 'mmrl[deepspeed]'") from None
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        os.environ.pop("ACCELERATE_USE_CPU", None)  # cpu=True would turn DeepSpeed into plain MULTI_CPU
        kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
    accelerator = Accelerator(**kwargs)
    ran = engine_name(accelerator)
    if requested is not None and requested != ran and not (requested == "ddp" and ran == "single"):
        raise UserError(f"asked for the {requested} engine but Accelerate set up {ran}; check the launcher")
    return accelerator


def engine_name(accelerator: Any) -> str:
    """single, ddp, zero2, zero3 or fsdp: what this process group runs."""
    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        return f"zero{accelerator.state.deepspeed_plugin.zero_stage}"
    if kind == DistributedType.FSDP:
        return "fsdp"
    return "ddp" if accelerator.num_processes > 1 else "single"


def is_sharded(accelerator: Any) -> bool:
    """DeepSpeed or FSDP: the optimiser state (and under ZeRO-3 / FSDP the weights) is split over the ranks."""
    return accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)


def configure_deepspeed(accelerator: Any, micro_batch_size: int, accumulation: int, max_grad_norm: float) -> None:
    """Fill the DeepSpeed config from mmrl's, before `prepare`: the engine then steps once every `accumulation`
    micro-batches (one optimiser step per training step) and clips at `max_grad_norm` (0: no clipping)."""
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = micro_batch_size
    config["gradient_accumulation_steps"] = accumulation
    config["train_batch_size"] = micro_batch_size * accumulation * accelerator.num_processes
    config["gradient_clipping"] = float(max_grad_norm)
    zero = config.setdefault("zero_optimization", {})
    if zero.get("stage") == 3:  # the exported model is the consolidated full weights
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    accelerator.gradient_accumulation_steps = accumulation


def all_reduce(accelerator: Any, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """`tensor` reduced over the processes (sum, max, ...); itself on one process. Returns a CPU tensor."""
    if accelerator.num_processes == 1:
        return tensor
    return accelerator.reduce(tensor.to(accelerator.device), reduction=op).cpu()


def any_process(accelerator: Any, flag: bool) -> bool:
    """True on every process when `flag` is true on any: the processes then take the same branch."""
    return bool(all_reduce(accelerator, torch.tensor([float(flag)]), "max").item() > 0)


def max_over_processes(accelerator: Any, value: int) -> int:
    """The largest `value` of any process (every process gets it): how many passes each must run in lockstep."""
    return int(all_reduce(accelerator, torch.tensor([float(value)]), "max").item())


@contextlib.contextmanager
def timed(timers: dict[str, float], name: str) -> Iterator[None]:
    """Adds the wall time of the block to `timers["time/<name>"]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        key = f"time/{name}"
        timers[key] = timers.get(key, 0.0) + time.perf_counter() - start


@contextlib.contextmanager
def generation_model(model: Any, accelerator: Any) -> Iterator[Any]:
    """The model to generate with: TRL's `unwrap_model_for_generation` (ZeRO-3 gathers the sharded weights once here;
    DDP just unwraps; gradient checkpointing, which would drop the generation cache, is off inside). TRL 1.16 reads
    transformers' deprecated `is_gradient_checkpointing` there on every call: that one warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*deprecated", category=FutureWarning)
        with unwrap_model_for_generation(model, accelerator) as unwrapped:
            yield unwrapped
