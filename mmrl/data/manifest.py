"""Training data: a manifest read into `Sample`s (bad lines counted, never replaced) and a resumable stream of
batches (images are opened per sample by `mmrl.models.prompts.load_image`; one that fails raises `SampleError`
upstream).

The stream walks a fresh permutation of the manifest each epoch (drawn from `seed + epoch` by its own generator,
so it does not depend on, or disturb, the global RNG); its position (epoch, cursor) is all a checkpoint needs to
continue with exactly the samples that come next. With P processes each global batch of N samples is cut into P
contiguous slices of N / P: the ranks see different samples, and the union is what one process would have seen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mmrl.errors import UserError
from mmrl.types import Sample


class SampleError(Exception):
    """A sample that cannot be used now (image gone since the build, prompt too long): skipped and counted."""


@dataclass
class Manifest:
    path: Path
    samples: list[Sample]
    # (line number, reason) of each line that did not make a Sample; they are skipped, never replaced
    rejects: list[tuple[int, str]] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.path.parent


def read_manifest(path: str | Path) -> Manifest:
    """Read a manifest.jsonl; bad lines are counted in `rejects`, a missing or empty manifest is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"manifest not found: {path}")
    samples: list[Sample] = []
    rejects: list[tuple[int, str]] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                sample = Sample.from_record(json.loads(line))
                sample.image_path(path.parent)  # an image path leaving the manifest folder is a bad record
            except (json.JSONDecodeError, ValueError) as err:
                rejects.append((number, str(err)))
                continue
            if sample.id in seen:
                rejects.append((number, f"duplicate id {sample.id!r}"))
                continue
            seen.add(sample.id)
            samples.append(sample)
    if not samples:
        detail = f" ({len(rejects)} bad lines, first: line {rejects[0][0]}: {rejects[0][1]})" if rejects else ""
        raise UserError(f"manifest {path} holds no usable sample{detail}")
    return Manifest(path, samples, rejects)


class SampleStream:
    """Endless, resumable, epoch-wise (optionally shuffled) stream of manifest indices, sharded over processes."""

    def __init__(
        self, num_samples: int, *, seed: int, shuffle: bool = True, process_index: int = 0, num_processes: int = 1
    ) -> None:
        if num_samples < 1:
            raise ValueError("a stream needs at least one sample")
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.process_index = process_index
        self.num_processes = num_processes
        self.epoch = 0
        self.cursor = 0  # position within the epoch's order
        self._order = self._order_of(0)

    def _order_of(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_samples))
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def _take(self, count: int) -> list[int]:
        out: list[int] = []
        while len(out) < count:
            if self.cursor == self.num_samples:
                self.epoch += 1
                self.cursor = 0
                self._order = self._order_of(self.epoch)
            take = min(count - len(out), self.num_samples - self.cursor)
            out.extend(self._order[self.cursor : self.cursor + take])
            self.cursor += take
        return out

    def next_batch(self, global_size: int) -> list[int]:
        """This process's slice of the next `global_size` indices (every process advances by all of them).

        >>> stream = SampleStream(5, seed=0, shuffle=False, process_index=1, num_processes=2)
        >>> stream.next_batch(4), stream.next_batch(4), stream.state_dict()
        ([2, 3], [1, 2], {'epoch': 1, 'cursor': 3})
        """
        if global_size % self.num_processes:
            raise ValueError(f"a global batch of {global_size} does not split over {self.num_processes} processes")
        indices = self._take(global_size)
        per_process = global_size // self.num_processes
        return indices[self.process_index * per_process : (self.process_index + 1) * per_process]

    @property
    def position(self) -> int:
        """How many indices the stream has handed out in all (every process): a sample's unique draw number."""
        return self.epoch * self.num_samples + self.cursor

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._order = self._order_of(self.epoch)
