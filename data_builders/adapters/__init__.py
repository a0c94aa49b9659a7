"""Adapters: one per source format, each turning a source into `Item`s (or `Reject`s for records it can't read).

`iter_items` picks the adapter, applies `source.limit`, and rejects what no later stage should see: duplicate ids,
empty questions, empty answers. Adapters open no images; workers do (data_builders.worker).
"""

from __future__ import annotations

from collections.abc import Iterator

from data_builders.config import BuildConfig
from data_builders.records import Item, Reject, SynthImage


def _adapter(cfg: BuildConfig) -> Iterator[Item | Reject]:
    kind = cfg.source.kind
    if kind == "jsonl":
        from data_builders.adapters.jsonl import read
    elif kind == "coco":
        from data_builders.adapters.coco import read
    elif kind == "defacto":
        from data_builders.adapters.defacto import read
    elif kind == "coop":
        from data_builders.adapters.coop import read
    elif kind == "hf":
        from data_builders.adapters.hf import read
    else:
        from data_builders.adapters.synthetic import read
    return read(cfg)


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
