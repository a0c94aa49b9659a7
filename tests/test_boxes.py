"""Box frames: the Qwen2.5-VL frame is the image processor's own resize, and conversions invert each other."""

import numpy as np
import pytest
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

from mmrl.boxes import Frame, FrameSpec, clip_box, from_model_frame, to_model_frame
from mmrl.types import Box

SIZES = [(84, 84), (640, 480), (1920, 1080), (33, 500), (3000, 4000), (57, 29)]
# (width, height) with a side of 14 px or less: with min_pixels 3136, qwen-vl-utils gives another size
# for all but 13x13 (1000x12: 28x1008 instead of the processor's 28x532)
THIN = [(300, 14), (14, 300), (500, 10), (420, 7), (1000, 12), (13, 13)]
BUDGETS = [(56 * 56, 28 * 28 * 256), (3136, 12845056), (256 * 28 * 28, 1280 * 28 * 28)]


@pytest.mark.parametrize("size", SIZES + THIN)
@pytest.mark.parametrize("budget", BUDGETS)
def test_qwen2_5_frame_is_the_processor_resize(size, budget):
    """The frame's extent equals what Qwen2.5-VL's image processor feeds the model: its grid times the patch size."""
    width, height = size
    processor = Qwen2VLImageProcessor(
        size={"shortest_edge": budget[0], "longest_edge": budget[1]}, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    grid = processor(images=[np.zeros((height, width, 3), dtype=np.uint8)], return_tensors="pt")["image_grid_thw"]
    resized_h, resized_w = int(grid[0, 1]) * 14, int(grid[0, 2]) * 14
    spec = FrameSpec.for_family("qwen2_5_vl", *budget)
    whole = spec.to_model(Box(0, 0, width, height), size)
    assert whole.to_list() == pytest.approx([0, 0, resized_w, resized_h])


def test_thin_image_scale_by_hand():
    # 300x14 with the default budget: round(14/28) = 0 rows, so the area 0 is under min_pixels and the processor
    # scales up by sqrt(3136 / 4200): height ceil(14 * 0.864 / 28) * 28 = 28, width ceil(300 * 0.864 / 28) * 28 = 280
    # (qwen-vl-utils would give 28 x 308)
    box = to_model_frame(Box(0, 0, 300, 14), Frame.RESIZED_PIXELS, (300, 14))
    assert box.to_list() == pytest.approx([0, 0, 280, 28])


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("size", SIZES + THIN)
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


def test_aspect_ratio_over_200_is_an_error():
    with pytest.raises(ValueError, match="aspect ratio"):
        to_model_frame(Box(0, 0, 1, 1), Frame.RESIZED_PIXELS, (2010, 10))


def test_unknown_family():
    with pytest.raises(ValueError, match="unknown model family"):
        FrameSpec.for_family("llava")


def test_clip_box():
    assert clip_box(Box(-5, -5, 10, 10), (8, 8)) == Box(0, 0, 8, 8)
    assert clip_box(Box(10, 10, 20, 20), (8, 8)) is None
