"""Typed records that flow from the manifest to the rewards.

A manifest line (DESIGN.md, "The data contract") becomes one `Sample`; boxes are `Box`; variants are `Variant`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, get_args

# the model families mmrl trains: the one list (configs, loading, tiny models and box frames read it)
Family = Literal["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]
FAMILIES: tuple[str, ...] = get_args(Family)


class Variant(StrEnum):
    POSITIVE = "positive"
    COUNTERFACTUAL = "counterfactual"
    RANDOM_MASKED = "random_masked"


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in float pixels; pixel (i, j) covers [i, i+1) x [j, j+1)."""

    x1: float
    y1: float
    x2: float
    y2: float

    def __post_init__(self) -> None:
        coords = (self.x1, self.y1, self.x2, self.y2)
        if not all(isinstance(c, int | float) and math.isfinite(c) for c in coords):
            raise ValueError(f"box coordinates must be finite numbers, got {list(coords)}")
        if not (self.x1 < self.x2 and self.y1 < self.y2):
            raise ValueError(f"box needs x1 < x2 and y1 < y2, got {list(coords)}")

    @classmethod
    def from_list(cls, values: Any) -> Box:
        if not isinstance(values, list | tuple) or len(values) != 4:
            raise ValueError(f"a box is a list of four numbers [x1, y1, x2, y2], got {values!r}")
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
            raise ValueError(f"a box is a list of four numbers [x1, y1, x2, y2], got {values!r}")
        return cls(*(float(v) for v in values))

    @classmethod
    def from_xywh(cls, values: Any) -> Box:
        x, y, w, h = Box._four(values)
        return cls(x, y, x + w, y + h)

    @staticmethod
    def _four(values: Any) -> tuple[float, float, float, float]:
        if not isinstance(values, list | tuple) or len(values) != 4:
            raise ValueError(f"expected four numbers, got {values!r}")
        return tuple(float(v) for v in values)  # type: ignore[return-value]

    def to_list(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return self.width * self.height

    def intersection(self, other: Box) -> float:
        w = min(self.x2, other.x2) - max(self.x1, other.x1)
        h = min(self.y2, other.y2) - max(self.y1, other.y1)
        return max(w, 0.0) * max(h, 0.0)

    def iou(self, other: Box) -> float:
        """Intersection over union.

        >>> Box(0, 0, 2, 2).iou(Box(1, 0, 3, 2))  # overlap 2, union 6
        0.3333333333333333
        """
        inter = self.intersection(other)
        return inter / (self.area + other.area - inter)

    def inside(self, width: float, height: float) -> bool:
        return self.x1 >= 0 and self.y1 >= 0 and self.x2 <= width and self.y2 <= height

    def expand(self, margin: float) -> Box:
        return Box(self.x1 - margin, self.y1 - margin, self.x2 + margin, self.y2 + margin)


def _boxes(values: Any, name: str) -> tuple[Box, ...]:
    if values is None:
        return ()
    if not isinstance(values, list | tuple):
        raise ValueError(f"'{name}' must be a list of boxes, got {type(values).__name__}")
    return tuple(Box.from_list(v) for v in values)


@dataclass(frozen=True)
class Sample:
    """One manifest line: one variant of one source item."""

    id: str
    group_id: str
    variant: Variant
    image: str
    image_size: tuple[int, int]
    question: str
    answer: str
    answer_aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] | None = None
    evidence: tuple[Box, ...] = ()
    distractors: tuple[Box, ...] = ()
    masked: tuple[Box, ...] = ()
    task: str = "vqa"
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Sample:
        """Make a Sample from a manifest line; a missing or malformed field raises ValueError naming it."""
        if not isinstance(record, dict):
            raise ValueError(f"a manifest line must be a JSON object, got {type(record).__name__}")
        for key in ("id", "variant", "image", "image_size", "question", "answer"):
            if key not in record:
                raise ValueError(f"manifest record lacks '{key}'")
        try:
            variant = Variant(record["variant"])
        except ValueError:
            valid = ", ".join(v.value for v in Variant)
            raise ValueError(f"unknown variant {record['variant']!r} (valid: {valid})") from None
        size = record["image_size"]
        if (
            not isinstance(size, list | tuple)
            or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
        ):
            raise ValueError(f"'image_size' must be [width, height] positive integers, got {size!r}")
        for key in ("id", "image", "question", "answer"):
            if not isinstance(record[key], str):
                raise ValueError(f"'{key}' must be a string, got {type(record[key]).__name__}")
        aliases = record.get("answer_aliases") or []
        choices = record.get("choices")
        meta = record.get("meta") or {}
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise ValueError("'answer_aliases' must be a list of strings")
        if choices is not None and (not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)):
            raise ValueError("'choices' must be a list of strings")
        if not isinstance(meta, dict):
            raise ValueError("'meta' must be an object")
        return cls(
            id=record["id"],
            group_id=str(record.get("group_id", record["id"])),
            variant=variant,
            image=record["image"],
            image_size=(size[0], size[1]),
            question=record["question"],
            answer=record["answer"],
            answer_aliases=tuple(aliases),
            choices=tuple(choices) if choices is not None else None,
            evidence=_boxes(record.get("evidence"), "evidence"),
            distractors=_boxes(record.get("distractors"), "distractors"),
            masked=_boxes(record.get("masked"), "masked"),
            task=str(record.get("task", "vqa")),
            source=str(record.get("source", "")),
            meta=dict(meta),
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group_id": self.group_id,
            "variant": self.variant.value,
            "image": self.image,
            "image_size": list(self.image_size),
            "question": self.question,
            "answer": self.answer,
            "answer_aliases": list(self.answer_aliases),
            "choices": list(self.choices) if self.choices is not None else None,
            "evidence": [b.to_list() for b in self.evidence],
            "distractors": [b.to_list() for b in self.distractors],
            "masked": [b.to_list() for b in self.masked],
            "task": self.task,
            "source": self.source,
            "meta": self.meta,
        }

    def image_path(self, manifest_dir: str | Path) -> Path:
        """The image's path on disk; a path that leaves the manifest's folder is an error."""
        root = Path(manifest_dir).resolve()
        path = (root / self.image).resolve()
        if not path.is_relative_to(root):
            raise ValueError(f"image path {self.image!r} leaves the manifest folder {root}")
        return path
