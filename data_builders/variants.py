"""Masks and fills: the counterfactual (every evidence box masked) and the random-masked variant (the same total
area, similar shapes, away from the evidence, on distractors where there are some).

Masks act on whole pixels: a box covers every pixel it overlaps (`snap`), and the snapped box is what the manifest
records as `masked`. Both masked variants of an item use the same fill, so the fill can't tell the model which
variant it sees.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from data_builders.config import VariantsConfig
from data_builders.records import ItemError
from mmrl.types import Box

PixelBox = tuple[int, int, int, int]  # x1, y1, x2, y2 with x2, y2 exclusive


def snap(box: Box, size: tuple[int, int]) -> PixelBox:
    """The pixels a float box overlaps.

    >>> snap(Box(1.5, 2.0, 3.2, 4.0), (10, 10))
    (1, 2, 4, 4)
    """
    width, height = size
    return (
        max(0, math.floor(box.x1)),
        max(0, math.floor(box.y1)),
        min(width, math.ceil(box.x2)),
        min(height, math.ceil(box.y2)),
    )


def region_mask(boxes: list[PixelBox], size: tuple[int, int]) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        mask[y1:y2, x1:x2] = True
    return mask


def apply_fill(pixels: np.ndarray, boxes: list[PixelBox], cfg: VariantsConfig, seed: int) -> np.ndarray:
    """A copy of `pixels` with `boxes` filled; only pixels inside the boxes change."""
    out = pixels.copy()
    if cfg.fill == "solid":
        for x1, y1, x2, y2 in boxes:
            out[y1:y2, x1:x2] = cfg.fill_color
    elif cfg.fill == "mean":
        # the mean of the original image, so both variants of an item get the same colour
        color = np.round(pixels.reshape(-1, 3).mean(axis=0)).astype(np.uint8)
        for x1, y1, x2, y2 in boxes:
            out[y1:y2, x1:x2] = color
    elif cfg.fill == "blur":
        pad = int(math.ceil(3 * cfg.blur_sigma))
        height, width = pixels.shape[:2]
        for x1, y1, x2, y2 in boxes:
            cx1, cy1, cx2, cy2 = max(0, x1 - pad), max(0, y1 - pad), min(width, x2 + pad), min(height, y2 + pad)
            crop = cv2.GaussianBlur(pixels[cy1:cy2, cx1:cx2], (0, 0), cfg.blur_sigma)
            out[y1:y2, x1:x2] = crop[y1 - cy1 : y2 - cy1, x1 - cx1 : x2 - cx1]
    elif cfg.fill == "noise":
        rng = np.random.default_rng(seed)
        for x1, y1, x2, y2 in boxes:
            out[y1:y2, x1:x2] = rng.integers(0, 256, size=(y2 - y1, x2 - x1, 3), dtype=np.uint8)
    elif cfg.fill == "inpaint":
        mask = region_mask(boxes, (pixels.shape[1], pixels.shape[0])).astype(np.uint8) * 255
        painted = cv2.inpaint(pixels, mask, cfg.inpaint_radius, cv2.INPAINT_TELEA)
        out[mask > 0] = painted[mask > 0]
    else:
        raise ValueError(f"unknown fill {cfg.fill!r}")
    return out


def _window_sums(mask: np.ndarray, w: int, h: int) -> np.ndarray:
    """For every top-left (y, x), the number of set pixels in the w x h window there: (H-h+1, W-w+1)."""
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int32)  # int32: 2x faster, exact below 2^31 px
    integral[1:, 1:] = mask.cumsum(axis=0, dtype=np.int32).cumsum(axis=1, dtype=np.int32)
    return integral[h:, w:] - integral[:-h, w:] - integral[h:, :-w] + integral[:-h, :-w]


def _shapes(w: int, h: int, min_scale: float) -> list[tuple[int, int]]:
    """Candidate mask sizes: the box, turned, then shrunk while the area stays within the tolerance."""
    sizes = [(w, h), (h, w)]
    for scale in (0.97, min_scale):
        f = math.sqrt(scale)
        sw, sh = max(1, int(w * f)), max(1, int(h * f))
        sizes += [(sw, sh), (sh, sw)]
    return list(dict.fromkeys(sizes))


def place_random(
    evidence: list[PixelBox],
    distractors: list[PixelBox],
    size: tuple[int, int],
    cfg: VariantsConfig,
    rng: np.random.Generator,
) -> list[PixelBox]:
    """Boxes of the evidence's shapes whose total area is within `area_tolerance` of the evidence's (union) area,
    none closer than `margin` to any evidence box nor overlapping each other; raises ItemError when they don't fit."""
    width, height = size
    target = int(region_mask(evidence, size).sum())
    dims = sorted(((x2 - x1, y2 - y1) for x1, y1, x2, y2 in evidence), key=lambda d: -d[0] * d[1])
    total = sum(w * h for w, h in dims)
    if total > target * (1 + cfg.area_tolerance):  # overlapping evidence boxes: shrink to the union's area
        f = math.sqrt(target / total)
        dims = [(max(1, round(w * f)), max(1, round(h * f))) for w, h in dims]
    margin = int(math.ceil(cfg.margin))
    blocked = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in evidence:
        blocked[max(0, y1 - margin) : y2 + margin, max(0, x1 - margin) : x2 + margin] = True
    preferred = region_mask(distractors, size) & ~blocked
    placed: list[PixelBox] = []
    min_scale = 1.0 - 0.9 * cfg.area_tolerance
    for w, h in dims:
        for cw, ch in _shapes(w, h, min_scale):
            if cw > width or ch > height:
                continue
            free = _window_sums(blocked, cw, ch) == 0
            if free.any():
                break
        else:
            raise ItemError(
                "no_room_random_mask",
                f"no {w}x{h} placement in the {width}x{height} image at least {margin} px from the evidence",
            )
        score = np.where(free, _window_sums(preferred, cw, ch), -1) if distractors else None
        if score is not None and score.max() > 0:
            candidates = np.flatnonzero(score >= 0.5 * score.max())  # prefer windows mostly on distractors
        else:
            candidates = np.flatnonzero(free)
        y, x = divmod(int(candidates[rng.integers(len(candidates))]), free.shape[1])
        placed.append((x, y, x + cw, y + ch))
        blocked[y : y + ch, x : x + cw] = True
    area = int(region_mask(placed, size).sum())
    if abs(area - target) > cfg.area_tolerance * target:
        raise ItemError("no_room_random_mask", f"random masks cover {area} px, evidence {target} px (over tolerance)")
    return placed
