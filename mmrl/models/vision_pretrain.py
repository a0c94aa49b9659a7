"""Supervised pretraining of a tiny model's vision tower on grid-layout images (the warm start's first stage).

A real Qwen-VL starts from a vision encoder pretrained on billions of image-text pairs; a random-initialised tiny one
has to learn what a shape is only through the language model's answer token, and in SFT it did not: after 3,000
steps with "What shape is the <colour> object?" in half the data, held-out shape answers were at chance while the
colour was read correctly (measured for DESIGN.md's tiny Qwen2.5-VL). So before SFT this stage trains the vision
tower and its merger alone: a linear probe per merged visual token (one grid cell of the synthetic `grid` layout)
reads that cell's object shape and colour, or "empty". The probes are thrown away; the tower keeps what it learned.

`cell_labels(samples, grid, image_size)` gives the per-cell class indices from the samples' `meta.objects`;
`pretrain_vision(model, processor, samples, images, ...)` trains and returns the held-out probe accuracies.
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
) -> dict[str, float]:
    """Train `model.model.visual` (tower and merger) with per-cell shape and colour probes; returns the accuracies on
    `heldout` samples kept out of training (shape and colour of the cells that hold an object)."""
    visual = model.model.visual
    grid_tokens = grid * grid
    encoded = processor.image_processor(images=list(images), return_tensors="pt")
    if int(encoded["image_grid_thw"][0].prod()) != grid_tokens * visual.spatial_merge_size**2:
        raise ValueError(f"vision pretraining needs {grid_tokens} merged tokens an image (one per grid cell)")
    pixels = encoded["pixel_values"].view(len(images), -1, encoded["pixel_values"].shape[-1])
    thw = encoded["image_grid_thw"]
    names = label_names(samples)
    shape_ids, color_ids = cell_labels(samples, grid, images[0].width, names)
    width = visual.merger.mlp[-1].out_features
    generator = torch.Generator().manual_seed(seed)
    probes = torch.nn.ModuleList([torch.nn.Linear(width, len(names[0])), torch.nn.Linear(width, len(names[1]))])
    for probe in probes:
        torch.nn.init.normal_(probe.weight, std=0.02, generator=generator)
        torch.nn.init.zeros_(probe.bias)
    optimizer = torch.optim.AdamW([*visual.parameters(), *probes.parameters()], lr=learning_rate)
    train_rows = list(range(heldout, len(samples)))
    if len(train_rows) < batch_size:
        raise ValueError(f"vision pretraining needs more than {heldout + batch_size} samples, got {len(samples)}")
    order = random.Random(seed)
    visual.train()
    for step in range(steps):
        if step % (len(train_rows) // batch_size) == 0:
            order.shuffle(train_rows)
        start = (step % (len(train_rows) // batch_size)) * batch_size
        rows = torch.tensor(train_rows[start : start + batch_size])
        tokens = _tokens(visual, pixels[rows].flatten(0, 1), thw[rows])
        loss = sum(
            torch.nn.functional.cross_entropy(probe(tokens).flatten(0, 1), labels[rows].flatten())
            for probe, labels in zip(probes, (shape_ids, color_ids), strict=True)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        rows = torch.arange(min(heldout, len(samples)))
        tokens = _tokens(visual, pixels[rows].flatten(0, 1), thw[rows])
        occupied = shape_ids[rows] != len(names[0]) - 1
        accuracy = {
            f"{kind}_accuracy": (probe(tokens).argmax(-1)[occupied] == labels[rows][occupied]).float().mean().item()
            for kind, probe, labels in (("shape", probes[0], shape_ids), ("color", probes[1], color_ids))
        }
    return {**accuracy, "token_norm": tokens.norm(dim=-1).mean().item(), "steps": steps}
