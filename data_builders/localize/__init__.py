"""Localizers: each gives an item's evidence boxes and, where it can, distractor boxes.

A localizer takes a batch of `Target`s (the item, its RGB pixels, the boxes its source carried) and returns, per
target, a `Localized` or an `ItemError` (the item is rejected with that reason; a localizer never raises for one
bad item). `make_localizer` builds one from the config; heavy engines (OCR, VLM) load on first use, once per process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from data_builders.config import LocalizeConfig
from data_builders.records import Item, ItemError
from mmrl.types import Box


@dataclass
class Target:
    item: Item
    pixels: np.ndarray  # (H, W, 3) uint8 RGB
    boxes: list[Box]  # the source's evidence boxes, checked against the image
    distractors: list[Box]

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]


@dataclass
class Localized:
    evidence: list[Box]
    distractors: list[Box] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


Result = Localized | ItemError


class Localizer(Protocol):
    def localize(self, targets: list[Target]) -> list[Result]: ...


def make_localizer(cfg: LocalizeConfig, kind: str | None = None, proposer: bool = False) -> Localizer:
    """`proposer`: the localizer serves as `combine`'s proposal source, so it returns every region it finds."""
    kind = kind or cfg.kind
    if kind == "annotation":
        from data_builders.localize.annotation import AnnotationLocalizer

        return AnnotationLocalizer()
    if kind == "ocr":
        from data_builders.localize.ocr import OcrLocalizer

        return OcrLocalizer(cfg, propose_all=proposer)
    if kind == "saliency":
        from data_builders.localize.saliency import SaliencyLocalizer

        return SaliencyLocalizer(cfg)
    if kind == "vlm":
        from data_builders.localize.vlm import VlmLocalizer

        return VlmLocalizer(cfg)
    if kind == "combine":
        from data_builders.localize.combine import CombinedLocalizer

        return CombinedLocalizer(make_localizer(cfg, cfg.proposals, True), make_localizer(cfg, cfg.relevance), cfg)
    raise ValueError(f"unknown localizer {kind!r}")
