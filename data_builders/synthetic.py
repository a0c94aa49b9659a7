"""The synthetic source: shapes of known kind, colour, size and position, questions about them, exact evidence.

Every item is re-created from (seed, index) alone, so a worker renders it where it is needed and the same seed
always gives the same pixels. Two layouts:

- `grid` (the default, what a tiny model can learn; DESIGN.md "Learning on these CPUs"): an 84x84 image cut in a
  3x3 grid of 28-px cells (one merged visual token each) with at most one object per cell;
- `free`: objects of varied sizes anywhere on a larger image, never overlapping.

The evidence is what the answer rests on, so masking it removes the answer: a colour or position question asks about
a shape that occurs once (mask it and no such shape is left); a shape question ("What shape is the red object?")
names a colour only one object has; a count or existence question's evidence is every object of the asked shape.
Evidence boxes are the tight pixel extents of the drawn shapes (drawn without anti-aliasing), so a box covers every
pixel of its object. The other objects are distractors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from data_builders.config import SourceConfig
from data_builders.records import stable_seed

# hexagons are left out: at 14-22 px they read as circles
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 215, 40),
    "purple": (150, 60, 200),
    "orange": (245, 135, 30),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")


@dataclass
class SynthItem:
    id: str
    pixels: np.ndarray  # (H, W, 3) uint8
    question: str
    answer: str
    aliases: tuple[str, ...]
    evidence: list[list[float]]
    distractors: list[list[float]]
    meta: dict


def plural(shape: str) -> str:
    """The plural of a shape name.

    >>> plural("cross"), plural("star")
    ('crosses', 'stars')
    """
    return shape + ("es" if shape.endswith("s") else "s")


def item_id(seed: int, index: int) -> str:
    return f"syn{seed}-{index:06d}"


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    # muted mid tones (saturation and lightness kept away from every object colour, white and black included)
    base = rng.integers(95, 165, size=3).astype(np.float64)
    base = base.mean() + (base - base.mean()) * 0.35
    kind = rng.integers(4)
    canvas = np.broadcast_to(base, (size, size, 3)).copy()
    if kind == 1:  # gradient
        ramp = np.linspace(-20, 20, size)
        canvas += ramp[:, None, None] if rng.integers(2) else ramp[None, :, None]
    elif kind == 2:  # soft noise texture
        canvas += rng.normal(0, 6, size=(size, size, 1))
    elif kind == 3:  # faint stripes
        stripes = 10.0 * (((np.arange(size) // int(rng.integers(4, 9))) % 2) - 0.5)
        canvas += stripes[:, None, None] if rng.integers(2) else stripes[None, :, None]
    return np.clip(np.round(canvas), 0, 255).astype(np.uint8)


def _draw(draw: ImageDraw.ImageDraw, shape: str, x: int, y: int, s: int) -> None:
    e = s - 1  # inclusive extent
    cx, cy = x + e / 2, y + e / 2
    if shape == "circle":
        draw.ellipse([x, y, x + e, y + e], fill=255)
    elif shape == "square":
        draw.rectangle([x, y, x + e, y + e], fill=255)
    elif shape == "triangle":
        draw.polygon([(x, y + e), (x + e, y + e), (cx, y)], fill=255)
    elif shape == "diamond":
        draw.polygon([(cx, y), (x + e, cy), (cx, y + e), (x, cy)], fill=255)
    elif shape == "cross":
        t = max(2, s // 3)
        draw.rectangle([x + (s - t) // 2, y, x + (s - t) // 2 + t - 1, y + e], fill=255)
        draw.rectangle([x, y + (s - t) // 2, x + e, y + (s - t) // 2 + t - 1], fill=255)
    elif shape == "star":
        points = []
        for k in range(10):
            r = e / 2 if k % 2 == 0 else e / 5
            a = -math.pi / 2 + k * math.pi / 5
            points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        draw.polygon(points, fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _slots(cfg: SourceConfig, rng: np.random.Generator, n: int) -> list[tuple[int, int, int, str]]:
    """n non-overlapping (x, y, side, position-name) placements."""
    size = cfg.image_size
    if cfg.layout == "grid":
        cell = size // cfg.grid
        cells = rng.choice(cfg.grid * cfg.grid, size=n, replace=False)
        out = []
        for c in cells:
            row, col = divmod(int(c), cfg.grid)
            s = int(rng.integers(cfg.min_object, cfg.max_object + 1))
            x = col * cell + int(rng.integers(1, cell - s))
            y = row * cell + int(rng.integers(1, cell - s))
            out.append((x, y, s, _position_name(row, col, cfg.grid)))
        return out
    out: list[tuple[int, int, int, str]] = []
    for _ in range(200 * n):
        if len(out) == n:
            break
        s = int(rng.integers(cfg.min_object, cfg.max_object + 1))
        x, y = (int(v) for v in rng.integers(1, size - s, size=2))
        if all(x + s + 3 <= ox or ox + os_ + 3 <= x or y + s + 3 <= oy or oy + os_ + 3 <= y for ox, oy, os_, _ in out):
            third = size / 3
            name = _position_name(int((y + s / 2) // third), int((x + s / 2) // third), 3)
            out.append((x, y, s, name))
    return out


def _position_name(row: int, col: int, grid: int) -> str:
    r = ROWS[min(2, row * 3 // grid)]
    c = COLS[min(2, col * 3 // grid)]
    if r == "middle" and c == "center":
        return "center"
    return f"{r} {c}" if r != "middle" else f"middle {c}"


def generate(cfg: SourceConfig, seed: int, index: int) -> SynthItem:
    rng = np.random.default_rng(stable_seed("synthetic", seed, index))
    qtype = cfg.questions[int(rng.integers(len(cfg.questions)))]
    n = 1 if rng.random() < cfg.single_object_fraction else int(rng.integers(2, cfg.max_objects + 1))
    slots = _slots(cfg, rng, n)
    n = len(slots)
    target = SHAPES[int(rng.integers(len(SHAPES)))]
    others = [s for s in SHAPES if s != target]
    n_target = 1
    if qtype in ("count", "existence") and n > 1:
        n_target = int(rng.integers(1, min(n, 3) + 1))
    shapes = [target] * n_target + [others[int(i)] for i in rng.integers(len(others), size=n - n_target)]
    names = list(COLORS)
    colors = [names[int(i)] for i in rng.integers(len(names), size=n)]
    order = rng.permutation(n)  # the target objects land in random slots
    shapes = [shapes[i] for i in order]
    colors = [colors[i] for i in order]
    first = shapes.index(target)
    if qtype == "shape":  # the asked colour names one object: the others take other colours
        rest = [c for c in names if c != colors[first]]
        colors = [c if i == first or c != colors[first] else rest[int(rng.integers(len(rest)))]
                  for i, c in enumerate(colors)]  # fmt: skip

    pixels = _background(rng, cfg.image_size)
    boxes = []
    for (x, y, s, _), shape, color in zip(slots, shapes, colors, strict=True):
        mask_img = Image.new("L", (s, s), 0)
        _draw(ImageDraw.Draw(mask_img), shape, 0, 0, s)
        mask = np.asarray(mask_img) > 0
        pixels[y : y + s, x : x + s][mask] = COLORS[color]
        ys, xs = np.nonzero(mask)
        boxes.append([float(x + xs.min()), float(y + ys.min()), float(x + xs.max() + 1), float(y + ys.max() + 1)])
    is_target = [sh == target for sh in shapes]
    evidence = [b for b, t in zip(boxes, is_target, strict=True) if t]
    distractors = [b for b, t in zip(boxes, is_target, strict=True) if not t]
    aliases: tuple[str, ...] = ()
    if qtype == "color":
        question, answer = f"What color is the {target}?", colors[first]
    elif qtype == "shape":
        question, answer = f"What shape is the {colors[first]} object?", target
    elif qtype == "position":
        question, answer = f"Where is the {target}?", slots[first][3]
    elif qtype == "count":
        question, answer = f"How many {plural(target)} are there?", str(len(evidence))
        aliases = (NUMBER_WORDS[len(evidence)],)
    else:
        present = {c for c, t in zip(colors, is_target, strict=True) if t}
        asked = colors[first] if rng.random() < 0.5 else names[int(rng.integers(len(names)))]
        article = "an" if asked[0] in "aeiou" else "a"
        question, answer = f"Is there {article} {asked} {target}?", "yes" if asked in present else "no"
    meta = {
        "question_type": qtype,
        "layout": cfg.layout,
        "objects": [{"shape": sh, "color": c, "box": b} for sh, c, b in zip(shapes, colors, boxes, strict=True)],
    }
    return SynthItem(item_id(seed, index), pixels, question, answer, aliases, evidence, distractors, meta)
