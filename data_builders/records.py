"""The records that move between the stages: what an adapter yields (`Item`, `Reject`) and the helpers every stage
shares (stable per-item seeds, box cleaning).

Items are light and picklable: an image is a reference (`FileImage`, `HFImage`, `SynthImage`) that a worker opens,
so the main process can enumerate a large source without decoding anything.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from mmrl.boxes import clip_box
from mmrl.types import Box


@dataclass(frozen=True)
class FileImage:
    path: str  # as the source wrote it, relative to `root` (or absolute, but then inside `root`)
    root: str  # the dataset folder; a path that resolves outside it is rejected


@dataclass(frozen=True)
class HFImage:
    dataset: str  # a save_to_disk folder or a parquet file / folder
    split: str
    index: int
    column: str


@dataclass(frozen=True)
class SynthImage:
    index: int  # the generator re-creates the whole item (image, question, boxes) from (seed, index)


ImageRef = FileImage | HFImage | SynthImage


@dataclass(frozen=True)
class Prebuilt:
    """A variant image the source ships already made (the DeFacto release), with the boxes it masked."""

    image: FileImage
    masked: list[Any]


@dataclass
class Item:
    id: str
    source: str
    image: ImageRef
    question: str = ""
    answer: str = ""
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] | None = None
    boxes: list[Any] | None = None  # raw [x1, y1, x2, y2] from the source; checked once the image size is known
    distractors: list[Any] | None = None
    task: str = "vqa"
    meta: dict[str, Any] = field(default_factory=dict)
    prebuilt: dict[str, Prebuilt] = field(default_factory=dict)
    # (width, height) of the image the boxes were drawn on, when the source says (COCO's images entry): tells an
    # EXIF-rotated file's stored frame from its upright one (data_builders.images.upright_boxes)
    box_frame: tuple[int, int] | None = None


@dataclass(frozen=True)
class Reject:
    id: str
    code: str  # a short key that the summary counts, e.g. "missing_image"
    reason: str  # one line for a person
    variant: str | None = None

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"id": self.id, "code": self.code, "reason": self.reason}
        if self.variant is not None:
            record["variant"] = self.variant
        return record


class ItemError(Exception):
    """A record that can't be used; caught per item and written to the rejects file."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from the parts' text; unlike hash(), the same in every process and every run.

    >>> stable_seed(0, "item-1") == stable_seed(0, "item-1") != stable_seed(1, "item-1")
    True
    """
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def clean_boxes(raw: list[Any] | None, size: tuple[int, int], what: str) -> tuple[list[Box], int]:
    """Check source boxes against the image; returns (boxes, how many were clipped).

    The rule: a box partly outside the image is clipped to it; a malformed, non-finite, inverted or zero-area box,
    or one wholly outside the image, rejects the item (an inverted box usually means the source's convention was
    misread, so guessing would make wrong evidence).

    >>> clean_boxes([[-5, 0, 10, 10]], (20, 20), "evidence")
    ([Box(x1=0.0, y1=0.0, x2=10.0, y2=10.0)], 1)
    """
    boxes: list[Box] = []
    clipped = 0
    for value in raw or []:
        if (
            not isinstance(value, list | tuple)
            or len(value) != 4
            or any(isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) for v in value)
        ):
            raise ItemError("bad_box", f"{what} box {value!r} is not four finite numbers [x1, y1, x2, y2]")
        x1, y1, x2, y2 = (float(v) for v in value)
        if x2 <= x1 or y2 <= y1:
            kind = "zero-area" if x2 == x1 or y2 == y1 else "inverted"
            raise ItemError("bad_box", f"{what} box {list(value)} is {kind} (needs x1 < x2 and y1 < y2)")
        box = clip_box(Box(x1, y1, x2, y2), size)
        if box is None:
            raise ItemError("bad_box", f"{what} box {list(value)} lies outside the {size[0]}x{size[1]} image")
        if box != Box(x1, y1, x2, y2):
            clipped += 1
        boxes.append(box)
    return boxes, clipped
