"""Localizers: each gives an item's evidence boxes and, where it can, distractor boxes.

A localizer takes a batch of `Target`s (the item, its RGB pixels, the boxes its source carried) and returns, per
target, a `Localized` or an `ItemError` (the item is rejected with that reason; a localizer never raises for one
bad item). `make_localizer` builds one from the config; heavy engines (OCR, VLM) load on first use, once per process.
"""

from __future__ import annotations

from data_builders.config import LocalizeConfig
from data_builders.localize.annotation import AnnotationLocalizer
from data_builders.localize.base import Localized, Localizer, Result, Target
from data_builders.localize.combine import CombinedLocalizer
from data_builders.localize.ocr import OcrLocalizer
from data_builders.localize.saliency import SaliencyLocalizer
from data_builders.localize.vlm import VlmLocalizer

__all__ = ["Localized", "Localizer", "Result", "Target", "make_localizer"]


def make_localizer(cfg: LocalizeConfig, kind: str | None = None, proposer: bool = False) -> Localizer:
    """`proposer`: the localizer serves as `combine`'s proposal source, so it returns every region it finds."""
    kind = kind or cfg.kind
    if kind == "annotation":
        return AnnotationLocalizer()
    if kind == "ocr":
        return OcrLocalizer(cfg, propose_all=proposer)
    if kind == "saliency":
        return SaliencyLocalizer(cfg)
    if kind == "vlm":
        return VlmLocalizer(cfg)
    if kind == "combine":
        return CombinedLocalizer(make_localizer(cfg, cfg.proposals, True), make_localizer(cfg, cfg.relevance), cfg)
    raise ValueError(f"unknown localizer {kind!r}")
