"""Adapters: one per source format, each turning a source into `Item`s (or `Reject`s for records it can't read).

`iter_items` picks the adapter, applies `source.limit`, and rejects what no later stage should see: duplicate ids,
empty questions, empty answers. Adapters open no images; workers do (data_builders.worker).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from data_builders.adapters import coco, coop, defacto, defacto_bench, hf, jsonl, refcoco, synthetic, vlm_r1
from data_builders.config import BuildConfig
from data_builders.records import Item, Reject, SynthImage


def _coco(cfg: BuildConfig) -> Iterator[Item | Reject]:
    return refcoco.read(cfg) if cfg.source.coco_mode == "refs" else coco.read(cfg)


READERS: dict[str, Callable[[BuildConfig], Iterator[Item | Reject]]] = {
    "jsonl": jsonl.read,
    "coco": _coco,
    "refcoco": refcoco.read,
    "defacto": defacto.read,
    "defacto_bench": defacto_bench.read,
    "coop": coop.read,
    "vlm_r1": vlm_r1.read,
    "hf": hf.read,
    "synthetic": synthetic.read,
}


def iter_items(cfg: BuildConfig) -> Iterator[Item | Reject]:
    seen: set[str] = set()
    count = 0
    for entry in READERS[cfg.source.kind](cfg):
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
