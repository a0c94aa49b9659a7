"""Fixtures for the model tests: tiny models of the three families (built once per session) and real images."""

from __future__ import annotations

import pytest

from mmrl import testing
from mmrl.testing import FAMILIES, shapes_image

# the session fixture that builds the tiny models, registered here by name
tiny_model_dirs = testing.tiny_model_dirs


@pytest.fixture(scope="session")
def loaded(tiny_model_dirs):
    """{family: (model, processor)} loaded once per session; tests that change a model load their own."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return {
        family: (AutoModelForImageTextToText.from_pretrained(path), AutoProcessor.from_pretrained(path))
        for family, path in tiny_model_dirs.items()
    }


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def two_images():
    """Two different images of different sizes (so the two prompts have different numbers of visual tokens)."""
    first = shapes_image(84, 84, [("circle", "red", (8, 8, 36, 36)), ("square", "blue", (50, 50, 80, 80))])
    second = shapes_image(196, 112, [("triangle", "green", (60, 4, 120, 100))], background="yellow")
    return [first, second]
