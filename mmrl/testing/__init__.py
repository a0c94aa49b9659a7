"""Helpers for tests across mmrl: tiny models built once per session and real drawn images.

Use from a conftest.py:

    from mmrl import testing

    tiny_model_dirs = testing.tiny_model_dirs  # registers the session fixture

`small_tiny_model(family)` builds a smaller one on first use (register it the same way);
`tiny_model_dirs` maps each family to a folder holding its tiny model (built once into a session tmp dir);
`shapes_image(width, height, shapes)` draws real RGB images with PIL; `chat_batch(processor, images)` makes a
left-padded prompt batch from them; `biased_model(path, token_id, bias)` loads a tiny model whose output favours one
token (to make stops or forbidden tokens likely).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from mmrl.models.tiny import build_tiny_model

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


def build_tiny_models(root: str | Path, families: tuple[str, ...] = FAMILIES) -> dict[str, Path]:
    """Build (or reuse, when already there) one tiny model per family under `root`."""

    dirs = {}
    for family in families:
        path = Path(root) / f"tiny-{family}"
        if not (path / "config.json").exists():
            build_tiny_model(family, path)
        dirs[family] = path
    return dirs


@pytest.fixture(scope="session")
def small_tiny_model(tmp_path_factory: pytest.TempPathFactory):
    """family -> folder of a smaller tiny model (hidden 64, one layer, vision depth 1), built on first use."""

    root = tmp_path_factory.mktemp("small-tiny-models")
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            cache[family] = build_tiny_model(family, root / family, hidden_size=64, num_layers=1, vision_depth=1)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{family: folder} of tiny models built once per test session."""
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


def shapes_image(width: int, height: int, shapes: list[tuple[str, str, tuple[int, int, int, int]]], background="white"):
    """An RGB PIL image with `shapes` drawn: (kind in circle/square/triangle, colour name, box x1, y1, x2, y2)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    for kind, color, (x1, y1, x2, y2) in shapes:
        if kind == "circle":
            draw.ellipse((x1, y1, x2, y2), fill=color)
        elif kind == "square":
            draw.rectangle((x1, y1, x2, y2), fill=color)
        elif kind == "triangle":
            draw.polygon([((x1 + x2) // 2, y1), (x1, y2), (x2, y2)], fill=color)
        else:
            raise ValueError(f"unknown shape {kind!r}")
    return image


def chat_batch(processor, images, questions=("What color is the circle?", "How many squares are there?")) -> dict:
    """A left-padded prompt batch, one user turn per image: question first for even rows, image first for odd."""
    texts = []
    for i, _ in enumerate(images):
        text = {"type": "text", "text": questions[i % len(questions)]}
        content = [text, {"type": "image"}] if i % 2 == 0 else [{"type": "image"}, text]
        conversation = [{"role": "user", "content": content}]
        texts.append(processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False))
    return dict(processor(text=texts, images=list(images), padding=True, padding_side="left", return_tensors="pt"))


def biased_model(path: str | Path, token_id: int, bias: float):
    """The model at `path` with an output bias on one token: a real change of weights (the head is untied)."""
    import torch
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path)
    old = model.lm_head
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[token_id] = bias
    model.lm_head = head
    return model.eval()


def free_port() -> int:
    """A free TCP port on 127.0.0.1, for a test's own process group (torchrun's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def metrics_rows(run_dir: str | Path) -> list[dict]:
    """The rows of a run's metrics.jsonl."""
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
