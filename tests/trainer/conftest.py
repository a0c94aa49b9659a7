"""Shared pieces of the trainer tests: tiny models (hidden 64, 1-2 layers, vision depth 1) built once per session,
a small synthetic manifest, and a config factory for short CPU runs."""

from pathlib import Path

import pytest

from mmrl.config.loader import load_config
from mmrl.config.schema import TrainConfig


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    """family -> folder of a tiny random-initialised model with its processor, built on first use.

    Qwen3-VL gets two decoder layers: its DeepStack merger feeds the visual tokens' hidden states after layer 0,
    which with a single layer reach no completion logit (and its parameters no gradient)."""
    from mmrl.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("tiny_models")
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            cache[family] = build_tiny_model(
                family, root / family, hidden_size=64, num_layers=2 if family == "qwen3_vl" else 1, vision_depth=1
            )
        return cache[family]

    return get


@pytest.fixture(scope="session")
def synthetic_manifest(tmp_path_factory) -> Path:
    """8 synthetic items x 3 variants (84x84 images), built with the data builders' Python API."""
    from data_builders.build import build
    from data_builders.config import BuildConfig

    out = tmp_path_factory.mktemp("synthetic")
    overrides = ["source.kind=synthetic", "source.num_items=8", f"out={out}", "workers=0", "progress=false"]
    build(load_config(BuildConfig, None, overrides))
    return out / "manifest.jsonl"


# a short run: the length reward is continuous in the completion's length, so groups keep reward spread
BASE = {
    "model.min_pixels": 7056,
    "model.max_pixels": 7056,
    "data.template": "direct",
    "rewards.template": "direct",
    "rewards.terms": "{answer: 1.0, length: 1.0}",
    "rewards.length_max_chars": 8,
    "rewards.length_penalty": 0.05,
    "rollout.num_generations": 4,
    "rollout.max_completion_length": 12,
    "training.batch_size": 2,
    "training.micro_batch_size": 8,
    "training.max_steps": 2,
    "training.learning_rate": 1e-3,
    "training.resume": "never",
    "logging.tensorboard": False,
    "logging.samples_steps": 0,
}


@pytest.fixture
def make_config(tiny_model_dirs, synthetic_manifest, tmp_path):
    """make_config(family="qwen2_5_vl", **{"grpo.beta": 0.04}) -> a TrainConfig for a short run in tmp_path."""

    def make(family: str = "qwen2_5_vl", out: str = "run", **overrides) -> TrainConfig:
        values = {
            **BASE,
            "model.name_or_path": str(tiny_model_dirs(family)),
            "data.train_manifest": str(synthetic_manifest),
            "training.output_dir": str(tmp_path / out),
            **overrides,
        }
        return load_config(TrainConfig, None, [f"{k}={v}" for k, v in values.items()])

    return make
