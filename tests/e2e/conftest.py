"""Fixtures of the end-to-end tests: a small tiny Qwen2.5-VL (hidden 64, one decoder layer, vision depth 1), built
once per session, and small synthetic manifests built with the data builders' Python API."""

from pathlib import Path

import pytest

from mmrl import testing
from mmrl.config.loader import load_config

tiny_model_dirs = testing.small_tiny_model  # a session fixture: family -> folder of a small tiny model


@pytest.fixture(scope="session")
def build_synthetic():
    """build(out, num_items, seed) -> the manifest of a synthetic grid build (configs/build/synthetic.yaml)."""
    from data_builders.build import build
    from data_builders.config import BuildConfig

    def make(out: Path, num_items: int, seed: int) -> Path:
        overrides = [f"out={out}", f"source.num_items={num_items}", f"seed={seed}", "workers=0", "progress=false"]
        build(load_config(BuildConfig, Path(__file__).parents[2] / "configs/build/synthetic.yaml", overrides))
        return out / "manifest.jsonl"

    return make
