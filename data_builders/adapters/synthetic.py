"""The synthetic source: item ids only; a worker renders each item from (seed, index) (data_builders.synthetic)."""

from __future__ import annotations

from collections.abc import Iterator

from data_builders.config import BuildConfig
from data_builders.records import Item, SynthImage
from data_builders.synthetic import item_id


def read(cfg: BuildConfig) -> Iterator[Item]:
    name = cfg.source.name or "synthetic"
    for index in range(cfg.source.num_items):
        yield Item(id=item_id(cfg.seed, index), source=name, image=SynthImage(index))
