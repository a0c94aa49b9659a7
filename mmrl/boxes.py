"""The one place where boxes move between image pixels and the frame a model speaks in.

Frames (DESIGN.md, "Boxes"):
- Qwen2.5-VL names absolute pixels of the image *after* the processor's resize (`smart_resize`);
- Qwen2-VL and Qwen3-VL name coordinates normalised to 0-1000 of the image.

The Qwen2.5-VL size comes from transformers' own `smart_resize`, the function its image processor calls, so a box
means the pixels the model saw. qwen-vl-utils' copy differs on thin images (a side of 14 px or less: it rounds that
side up to 28 before checking the pixel budget, the processor does not), and so did the copy that used to live here.
It is imported on first use only: that module imports torch, which the data builders' workers need not load.
tests/test_boxes.py checks the sizes against the processor's `image_grid_thw`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mmrl.types import Box


class Frame(StrEnum):
    PIXELS = "pixels"  # pixels of the stored image (no conversion)
    RESIZED_PIXELS = "resized_pixels"  # Qwen2.5-VL
    NORM_1000 = "norm_1000"  # Qwen2-VL, Qwen3-VL


FAMILY_FRAME = {
    "qwen2_vl": Frame.NORM_1000,
    "qwen2_5_vl": Frame.RESIZED_PIXELS,
    "qwen3_vl": Frame.NORM_1000,
}

# patch size x spatial merge size: the side of one merged visual token, in pixels
FAMILY_FACTOR = {"qwen2_vl": 28, "qwen2_5_vl": 28, "qwen3_vl": 32}


def resized_size(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) of an image after the Qwen-VL image processor's resize (transformers' `smart_resize`).

    >>> resized_size(480, 640, 28, 56 * 56, 14 * 14 * 4 * 1280), resized_size(14, 300, 28, 56 * 56, 28 * 28 * 1280)
    ((476, 644), (28, 280))
    """
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    return smart_resize(height, width, factor, min_pixels, max_pixels)


def _extent(
    frame: Frame, image_size: tuple[int, int], factor: int, min_pixels: int, max_pixels: int
) -> tuple[float, float]:
    """The (width, height) of the image as the model's frame measures it."""
    width, height = image_size
    if frame is Frame.PIXELS:
        return float(width), float(height)
    if frame is Frame.NORM_1000:
        return 1000.0, 1000.0
    resized_h, resized_w = resized_size(height, width, factor, min_pixels, max_pixels)
    return float(resized_w), float(resized_h)


def to_model_frame(
    box: Box,
    frame: Frame,
    image_size: tuple[int, int],
    factor: int = 28,
    min_pixels: int = 56 * 56,
    max_pixels: int = 14 * 14 * 4 * 1280,
) -> Box:
    """A box in pixels of the stored image -> the model's frame.

    >>> to_model_frame(Box(64, 48, 320, 240), Frame.NORM_1000, (640, 480))
    Box(x1=100.0, y1=100.0, x2=500.0, y2=500.0)
    """
    return _rescale(box, image_size, _extent(frame, image_size, factor, min_pixels, max_pixels))


def from_model_frame(
    box: Box,
    frame: Frame,
    image_size: tuple[int, int],
    factor: int = 28,
    min_pixels: int = 56 * 56,
    max_pixels: int = 14 * 14 * 4 * 1280,
) -> Box:
    """A box in the model's frame -> pixels of the stored image (the inverse of `to_model_frame`).

    >>> from_model_frame(Box(100, 100, 500, 500), Frame.NORM_1000, (640, 480))
    Box(x1=64.0, y1=48.0, x2=320.0, y2=240.0)
    """
    return _rescale(box, _extent(frame, image_size, factor, min_pixels, max_pixels), image_size)


def _rescale(box: Box, source: tuple[float, float], target: tuple[float, float]) -> Box:
    """`box` measured in a (width, height) `source` extent -> the same box in the `target` extent."""
    (sw, sh), (tw, th) = source, target  # multiply first, then divide: exact on whole-number boxes
    return Box(box.x1 * tw / sw, box.y1 * th / sh, box.x2 * tw / sw, box.y2 * th / sh)


def clip_box(box: Box, image_size: tuple[int, int]) -> Box | None:
    """The part of `box` inside the image, or None when nothing is left."""
    width, height = image_size
    x1, y1 = max(box.x1, 0.0), max(box.y1, 0.0)
    x2, y2 = min(box.x2, float(width)), min(box.y2, float(height))
    if x1 >= x2 or y1 >= y2:
        return None
    return Box(x1, y1, x2, y2)


@dataclass(frozen=True)
class FrameSpec:
    """Everything needed to convert boxes for one model: its frame and its processor's pixel budget."""

    frame: Frame = Frame.PIXELS
    factor: int = 28
    min_pixels: int = 56 * 56
    max_pixels: int = 14 * 14 * 4 * 1280

    @classmethod
    def for_family(cls, family: str, min_pixels: int = 56 * 56, max_pixels: int = 14 * 14 * 4 * 1280) -> FrameSpec:
        if family not in FAMILY_FRAME:
            raise ValueError(f"unknown model family {family!r} (valid: {', '.join(FAMILY_FRAME)})")
        return cls(FAMILY_FRAME[family], FAMILY_FACTOR[family], min_pixels, max_pixels)

    def to_pixels(self, box: Box, image_size: tuple[int, int]) -> Box:
        return from_model_frame(box, self.frame, image_size, self.factor, self.min_pixels, self.max_pixels)

    def to_model(self, box: Box, image_size: tuple[int, int]) -> Box:
        return to_model_frame(box, self.frame, image_size, self.factor, self.min_pixels, self.max_pixels)
