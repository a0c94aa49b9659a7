"""Boxes between frames: round trips, and the pixels a box names (tests/test_boxes.py checks the resized sizes
against the image processor itself).

The rewards convert a model's box to pixels of the stored image with `FrameSpec.to_pixels`; these tests check
that the box a Qwen2.5-VL model would name on its resized input lands on the evidence in the original image.
"""

import numpy as np
import pytest
from PIL import Image

from mmrl.boxes import Frame, FrameSpec, resized_size
from mmrl.rewards.config import RewardConfig
from mmrl.rewards.grounding import grounding_reward, to_pixel_box
from mmrl.rewards.parsing import format_boxes
from mmrl.types import Box, Sample

SIZES = [(84, 84), (640, 480), (1000, 333), (57, 200), (2000, 1500)]  # (width, height)
BUDGETS = [(56 * 56, 28 * 28 * 256), (256 * 28 * 28, 1280 * 28 * 28), (3136, 12845056)]


def _sample(size, evidence):
    return Sample.from_record(
        {
            "id": "x",
            "variant": "positive",
            "image": "i.png",
            "image_size": list(size),
            "question": "q",
            "answer": "a",
            "evidence": [evidence.to_list()],
        }
    )


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("budget", BUDGETS)
def test_qwen2_5_round_trip_uses_smart_resize(size, budget):
    width, height = size
    spec = FrameSpec(Frame.RESIZED_PIXELS, 28, *budget)
    resized_h, resized_w = resized_size(height, width, 28, *budget)
    evidence = Box(width * 0.25, height * 0.1, width * 0.75, height * 0.6)
    model_box = spec.to_model(evidence, size)
    # in the resized frame, coordinates scale by resized / original on each axis
    assert model_box.to_list() == pytest.approx(
        [
            evidence.x1 * resized_w / width,
            evidence.y1 * resized_h / height,
            evidence.x2 * resized_w / width,
            evidence.y2 * resized_h / height,
        ]
    )
    assert spec.to_pixels(model_box, size).to_list() == pytest.approx(evidence.to_list())
    # the whole resized image maps to the whole original image, and is inside it
    whole = to_pixel_box(Box(0, 0, resized_w, resized_h), size, spec)
    assert whole is not None and whole.to_list() == pytest.approx([0, 0, width, height])
    assert to_pixel_box(Box(0, 0, resized_w + 1, resized_h), size, spec) is None
    # the reward reads the model's (rounded) box back onto the evidence
    text = format_boxes([model_box], decimals=3)
    assert grounding_reward(text, _sample(size, evidence), frame=spec) == 1.0


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
@pytest.mark.parametrize("size", SIZES)
def test_norm_1000_frames(family, size):
    spec = FrameSpec.for_family(family)
    evidence = Box(size[0] * 0.1, size[1] * 0.2, size[0] * 0.5, size[1] * 0.9)
    model_box = spec.to_model(evidence, size)
    assert model_box.to_list() == pytest.approx([100, 200, 500, 900])
    assert grounding_reward(format_boxes([model_box]), _sample(size, evidence), frame=spec) == 1.0
    assert to_pixel_box(Box(0, 0, 1000, 1000), size, spec).to_list() == pytest.approx([0, 0, size[0], size[1]])


@pytest.mark.parametrize(
    ("size", "budget"), [((640, 480), BUDGETS[0]), ((1000, 333), BUDGETS[1]), ((57, 200), BUDGETS[0])]
)
def test_box_on_resized_image_names_the_evidence_pixels(size, budget):
    """Draw the evidence on the original, resize as the processor does, find the drawn pixels in the resized image:
    their bounding box is what the model sees and names; mapped back, it covers the evidence's pixels."""
    width, height = size
    evidence = Box(round(width * 0.3), round(height * 0.25), round(width * 0.7), round(height * 0.55))
    original = np.zeros((height, width), dtype=np.uint8)
    original[int(evidence.y1) : int(evidence.y2), int(evidence.x1) : int(evidence.x2)] = 255
    resized_h, resized_w = resized_size(height, width, 28, *budget)
    resized = np.asarray(Image.fromarray(original).resize((resized_w, resized_h), Image.BILINEAR))
    ys, xs = np.nonzero(resized >= 128)
    named = Box(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)  # pixel (i, j) covers [i, i+1)
    spec = FrameSpec(Frame.RESIZED_PIXELS, 28, *budget)
    assert spec.to_model(evidence, size).iou(named) > 0.9
    back = spec.to_pixels(named, size)
    # within one resized pixel of the evidence on every side, in original pixels
    tolerance = [width / resized_w, height / resized_h] * 2
    assert np.all(np.abs(np.array(back.to_list()) - np.array(evidence.to_list())) <= np.array(tolerance) + 1e-9)
    assert back.iou(evidence) > 0.9
    assert grounding_reward(format_boxes([named]), _sample(size, evidence), frame=spec) == 1.0
    # read as plain pixels (the wrong frame) the same box misses whenever the resize changed the scale much
    if abs(resized_w / width - 1) > 0.2 or abs(resized_h / height - 1) > 0.2:
        wrong = grounding_reward(format_boxes([named]), _sample(size, evidence), config=RewardConfig(iou_threshold=0.9))
        assert wrong == 0.0
