"""Collectives the phases share: every process calls them at the same points, in the same order."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch


def all_reduce(accelerator: Any, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """`tensor` reduced over the processes (sum, max, ...); itself on one process. Returns a CPU tensor."""
    if accelerator.num_processes == 1:
        return tensor
    return accelerator.reduce(tensor.to(accelerator.device), reduction=op).cpu()


def any_process(accelerator: Any, flag: bool) -> bool:
    """True on every process when `flag` is true on any: the processes then take the same branch."""
    return bool(all_reduce(accelerator, torch.tensor([float(flag)]), "max").item() > 0)


@contextlib.contextmanager
def timed(timers: dict[str, float], name: str) -> Iterator[None]:
    """Adds the wall time of the block to `timers["time/<name>"]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        key = f"time/{name}"
        timers[key] = timers.get(key, 0.0) + time.perf_counter() - start
