"""What every localizer takes and gives: `Target`s in, one `Localized` or `ItemError` per target out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

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
