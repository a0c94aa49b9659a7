"""Supervised pretraining of a tiny model's vision tower on grid-layout images (the warm start's first stage).

A real Qwen-VL starts from a vision encoder pretrained on billions of image-text pairs; a random-initialised tiny one
has to learn what a shape is only through the language model's answer token, and in SFT it did not: after 3,000
steps with "What shape is the <colour> object?" in half the data, held-out shape answers were at chance while the
colour was read correctly (measured for DESIGN.md's tiny Qwen2.5-VL). So before SFT this stage trains the vision
tower and its merger alone, as a real VLM's projector is aligned before the language model sees it: each merged
visual token (one grid cell of the synthetic `grid` layout) is regressed onto a fixed target, the mean of one
direction for the cell's shape and one for its colour ("empty" included), from a seeded random orthonormal set.

Why fixed directions rather than learned linear probes (what this stage did first): with probes the tower read 0.98
of held-out shapes, yet SFT's 2-layer language model never bound the asked shape to its object (held-out accuracy
plateaued near 0.7, scenes of 3-4 objects near chance). Given ideal tokens, one orthonormal direction per shape and
per colour, and the direct template, the same language model bound them within 1,000 steps; with this stage, the
tower frozen in SFT and the direct template, the warm start reaches 0.98 held-out (scripts/make_warm_start.py).

`cell_labels(samples, grid, image_size)` gives the per-cell class indices from the samples' `meta.objects`;
`pretrain_vision(model, processor, samples, images, ...)` trains and returns the held-out accuracies.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

EMPTY = "empty"


def cell_of(box: Sequence[float], grid: int, image_size: int) -> int:
    """The grid cell (row-major) holding a box's centre.

    >>> cell_of([30, 2, 50, 22], 3, 84), cell_of([60, 62, 80, 82], 3, 84)
    (1, 8)
    """
    cell = image_size / grid
    col = min(grid - 1, int((box[0] + box[2]) / 2 // cell))
    row = min(grid - 1, int((box[1] + box[3]) / 2 // cell))
    return row * grid + col


def label_names(samples: Sequence[Any]) -> tuple[list[str], list[str]]:
    """(shape names, colour names) that occur in the samples' objects, sorted, each followed by "empty"."""
    shapes = sorted({o["shape"] for s in samples for o in s.meta.get("objects", [])})
    colors = sorted({o["color"] for s in samples for o in s.meta.get("objects", [])})
    return [*shapes, EMPTY], [*colors, EMPTY]


def cell_labels(
    samples: Sequence[Any], grid: int, image_size: int, names: tuple[list[str], list[str]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(shape, colour) class indices per sample and cell, shape (N, grid*grid) each; empty cells get the last class."""
    shapes, colors = names
    shape_ids = torch.full((len(samples), grid * grid), len(shapes) - 1)
    color_ids = torch.full((len(samples), grid * grid), len(colors) - 1)
    for row, sample in enumerate(samples):
        for obj in sample.meta["objects"]:
            cell = cell_of(obj["box"], grid, image_size)
            shape_ids[row, cell] = shapes.index(obj["shape"])
            color_ids[row, cell] = colors.index(obj["color"])
    return shape_ids, color_ids


def _tokens(visual: Any, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
    out = visual(pixel_values, grid_thw=grid_thw)
    out = getattr(out, "pooler_output", out)  # transformers 5.x returns an output object, older ones a tensor
    return out.view(grid_thw.shape[0], -1, out.shape[-1])


def target_directions(width: int, count: int, seed: int) -> torch.Tensor:
    """`count` orthonormal rows of length `width` (a seeded random rotation): one direction per class."""
    generator = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(width, count, generator=generator))[0].T


def pretrain_vision(
    model: Any,
    processor: Any,
    samples: Sequence[Any],
    images: Sequence[Any],
    steps: int,
    grid: int = 3,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    heldout: int = 200,
    seed: int = 0,
    token_norm: float = 45.0,
) -> dict[str, float]:
    """Train `model.model.visual` (tower and merger) so that each cell's merged token is `token_norm` times the mean
    of two fixed orthonormal directions, one for the cell's shape and one for its colour (or "empty"); returns the
    held-out accuracies (a cell's shape and colour read as the nearest direction, cells that hold an object)."""
    visual = model.model.visual
    grid_tokens = grid * grid
    encoded = processor.image_processor(images=list(images), return_tensors="pt")
    if int(encoded["image_grid_thw"][0].prod()) != grid_tokens * visual.spatial_merge_size**2:
        raise ValueError(f"vision pretraining needs {grid_tokens} merged tokens an image (one per grid cell)")
    pixels = encoded["pixel_values"].view(len(images), -1, encoded["pixel_values"].shape[-1])
    thw = encoded["image_grid_thw"]
    names = label_names(samples)
    shape_ids, color_ids = cell_labels(samples, grid, images[0].width, names)
    n_shapes = len(names[0])
    directions = target_directions(visual.merger.mlp[-1].out_features, n_shapes + len(names[1]), seed)
    targets = token_norm * (directions[shape_ids] + directions[n_shapes + color_ids]) / 2**0.5  # (N, cells, width)
    optimizer = torch.optim.AdamW(visual.parameters(), lr=learning_rate)
    train_rows = list(range(heldout, len(samples)))
    if len(train_rows) < batch_size:
        raise ValueError(f"vision pretraining needs more than {heldout + batch_size} samples, got {len(samples)}")
    order = random.Random(seed)
    visual.train()
    for _ in range(steps):
        rows = torch.tensor(order.sample(train_rows, batch_size))
        tokens = _tokens(visual, pixels[rows].flatten(0, 1), thw[rows])
        loss = ((tokens - targets[rows]) ** 2).sum(-1).mean() / token_norm**2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        rows = torch.arange(min(heldout, len(samples)))
        tokens = _tokens(visual, pixels[rows].flatten(0, 1), thw[rows])
        similarity = torch.nn.functional.normalize(tokens, dim=-1) @ directions.T
        occupied = shape_ids[rows] != n_shapes - 1
        shape_read = similarity[..., :n_shapes].argmax(-1)
        color_read = similarity[..., n_shapes:].argmax(-1)
        accuracy = {
            "shape_accuracy": (shape_read == shape_ids[rows])[occupied].float().mean().item(),
            "color_accuracy": (color_read == color_ids[rows])[occupied].float().mean().item(),
        }
    return {**accuracy, "token_norm": tokens.norm(dim=-1).mean().item(), "steps": steps}
