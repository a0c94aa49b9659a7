"""Adapters: one per source format, each turning a source into `Item`s (or `Reject`s for records it can't read).

`iter_items` picks the adapter, applies `source.limit`, and rejects what no later stage should see: duplicate ids,
empty questions, empty answers. Adapters open no images; workers do (data_builders.worker).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

from data_builders.config import BuildConfig
from data_builders.records import Item, Reject, SynthImage

_MODULES = {
    "jsonl": "jsonl",
    "coco": "coco",
    "defacto": "defacto",
    "defacto_bench": "defacto_bench",
    "coop": "coop",
    "vlm_r1": "vlm_r1",
    "hf": "hf",
    "synthetic": "synthetic",
}


def _adapter(cfg: BuildConfig) -> Iterator[Item | Reject]:
    # imported on use: an adapter's optional dependency (datasets, pyarrow) is needed only by its own kind
    module = importlib.import_module(f"data_builders.adapters.{_MODULES[cfg.source.kind]}")
    return module.read(cfg)


def iter_items(cfg: BuildConfig) -> Iterator[Item | Reject]:
    seen: set[str] = set()
    count = 0
    for entry in _adapter(cfg):
        if cfg.source.limit and count >= cfg.source.limit:
            return
        count += 1
        if entry.id in seen:
            yield Reject(entry.id, "duplicate_id", f"id {entry.id!r} occurs more than once in the source")
            continue
        seen.add(entry.id)
        if isinstance(entry, Item) and not isinstance(entry.image, SynthImage):
            if not entry.question.strip():
                yield Reject(entry.id, "empty_question", "the question is empty")
                continue
            if not entry.answer.strip():
                yield Reject(entry.id, "empty_answer", "the answer is empty")
                continue
        yield entry
