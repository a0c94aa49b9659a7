"""Box frames: smart_resize equals qwen-vl-utils', and conversions invert each other."""

import pytest
from qwen_vl_utils import smart_resize as reference_smart_resize

from mmrl.boxes import Frame, FrameSpec, clip_box, from_model_frame, smart_resize, to_model_frame
from mmrl.types import Box

SIZES = [(84, 84), (640, 480), (1920, 1080), (33, 500), (3000, 4000), (57, 29)]
BUDGETS = [(56 * 56, 28 * 28 * 256), (3136, 12845056), (256 * 28 * 28, 1280 * 28 * 28), (4 * 32 * 32, 32 * 32 * 64)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("factor", [28, 32])
def test_smart_resize_matches_qwen_vl_utils(size, budget, factor):
    width, height = size
    assert smart_resize(height, width, factor, *budget) == reference_smart_resize(height, width, factor, *budget)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("size", SIZES)
def test_round_trip(family, size):
    spec = FrameSpec.for_family(family, 56 * 56, 28 * 28 * 256)
    box = Box(size[0] * 0.1, size[1] * 0.2, size[0] * 0.7, size[1] * 0.9)
    back = spec.to_pixels(spec.to_model(box, size), size)
    assert back.to_list() == pytest.approx(box.to_list(), abs=1e-9)


def test_qwen2_5_frame_is_resized_pixels():
    # 640x480 with the default budget resizes to 644x476: x scales by 644/640, y by 476/480
    box = to_model_frame(Box(64, 48, 320, 240), Frame.RESIZED_PIXELS, (640, 480))
    assert box.to_list() == pytest.approx([64.4, 47.6, 322.0, 238.0])
    assert from_model_frame(box, Frame.RESIZED_PIXELS, (640, 480)).to_list() == pytest.approx([64, 48, 320, 240])


def test_unknown_family():
    with pytest.raises(ValueError, match="unknown model family"):
        FrameSpec.for_family("llava")


def test_clip_box():
    assert clip_box(Box(-5, -5, 10, 10), (8, 8)) == Box(0, 0, 8, 8)
    assert clip_box(Box(10, 10, 20, 20), (8, 8)) is None
