"""Shared helpers: small fixture images and a one-call build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_builders.build import build
from data_builders.config import BuildConfig
from mmrl.config.loader import load_config


def run_build(out: Path, *overrides: str) -> dict:
    """Build in this process (workers=0 unless overridden); returns the summary."""
    cfg = load_config(BuildConfig, None, [f"out={out}", "workers=0", "progress=false", *overrides])
    return build(cfg)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def photo(width: int = 96, height: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth colourful image that never holds the pure magenta the tests fill with."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 200 // width, y * 200 // height, (x + y) * 100 // (width + height) + 20], axis=2)
    return np.clip(base + rng.integers(0, 30, size=(height, width, 3)), 0, 200).astype(np.uint8)


def write_jsonl(path: Path, rows: list[dict | bytes]) -> Path:
    with open(path, "wb") as handle:
        for row in rows:
            handle.write(row if isinstance(row, bytes) else json.dumps(row).encode("utf-8"))
            handle.write(b"\n")
    return path


@pytest.fixture
def vqa_dir(tmp_path: Path) -> Path:
    """Three 96x64 JPEG/PNG images and a JSONL with boxes."""
    root = tmp_path / "data"
    root.mkdir()
    for i in range(3):
        Image.fromarray(photo(seed=i)).save(root / f"img{i}.png")
    rows = [
        {"id": f"q{i}", "image": f"img{i}.png", "question": "What is here?", "answer": "a thing",
         "boxes": [[10 + i, 8, 30 + i, 28]], "distractors": [[60, 30, 80, 50]]}
        for i in range(3)
    ]  # fmt: skip
    write_jsonl(root / "train.jsonl", rows)
    return root
