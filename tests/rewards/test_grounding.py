"""Grounding: one-to-one matching, F1 and continuous scores, distractors, counterfactuals, and AP metrics."""

import math

import numpy as np
import pytest

from mmrl.boxes import Frame, FrameSpec
from mmrl.eval.detection import average_precision, detection_metrics
from mmrl.rewards.config import RewardConfig
from mmrl.rewards.grounding import (
    continuous_score,
    giou_matrix,
    grounding_reward,
    grounding_stats,
    iou_matrix,
    match_pairs,
)
from mmrl.rewards.parsing import format_boxes
from mmrl.types import Box

EVIDENCE = Box(100, 100, 300, 250)  # the car item's evidence (conftest)


def test_iou_and_giou_by_hand():
    # boxes 0..2 and 1..3 on x, same y: overlap 1x2 = 2, union 6
    assert iou_matrix([Box(0, 0, 2, 2)], [Box(1, 0, 3, 2)])[0, 0] == pytest.approx(1 / 3)
    # disjoint unit boxes 2 apart: IoU 0, enclosing 3x1, union 2 -> GIoU = -1/3
    assert giou_matrix([Box(0, 0, 1, 1)], [Box(2, 0, 3, 1)])[0, 0] == pytest.approx(-1 / 3)
    assert giou_matrix([Box(0, 0, 1, 1)], [Box(0, 0, 1, 1)])[0, 0] == pytest.approx(1.0)
    huge = Box(-1e300, -1e300, 1e300, 1e300)
    assert np.isfinite(iou_matrix([huge], [Box(0, 0, 1, 1)])).all()
    assert np.isfinite(giou_matrix([huge], [huge])).all()


def test_hungarian_beats_greedy():
    weights = np.array([[0.9, 0.8], [0.85, 0.0]])
    assert match_pairs(weights, "hungarian") == [(0, 1), (1, 0)]  # 1.65 total
    assert match_pairs(weights, "greedy") == [(0, 0)]  # 0.9 total: greedy takes the best pair first
    assert match_pairs(np.zeros((0, 3))) == []


def test_stats_by_hand():
    gt = [Box(0, 0, 10, 10), Box(8, 0, 18, 10)]
    # pred0 = gt0 (IoU 1); pred1 is gt1 moved right by 2: overlap 8x10 of union 12x10 -> IoU 2/3
    pred = [Box(0, 0, 10, 10), Box(10, 0, 20, 10)]
    stats = grounding_stats(pred, gt, iou_threshold=0.5)
    assert stats.true_positives == 2 and stats.f1 == 1.0
    stats = grounding_stats(pred, gt, iou_threshold=0.7)
    assert (stats.true_positives, stats.precision, stats.recall, stats.f1) == (1, 0.5, 0.5, 0.5)
    assert stats.mean_iou == pytest.approx((1.0 + 2 / 3) / 2)
    assert grounding_stats([], gt) == grounding_stats(pred, [])


def test_continuous_modes():
    pred, gt = [Box(0, 0, 2, 2)], [Box(1, 0, 3, 2)]
    assert continuous_score(pred, gt, "mean_iou") == pytest.approx(1 / 3)
    assert continuous_score(pred, gt, "iou2") == pytest.approx(1 / 9)
    assert continuous_score(pred, gt, "giou") == pytest.approx((1 / 3 + 1) / 2)  # enclosing box = union
    assert continuous_score(pred * 2, gt, "mean_iou") == pytest.approx(1 / 6)  # the copy is unmatched


def test_grounding_reward_on_the_car(variants):
    positive = variants["positive"]
    assert grounding_reward(format_boxes([EVIDENCE]), positive) == 1.0
    assert grounding_reward("<answer>red</answer>", positive) == 0.0  # naming no box on a positive
    assert grounding_reward(format_boxes([Box(0, 0, 50, 50)]), positive) == 0.0
    # evidence + distractor: F1 of P=1/2, R=1 is 2/3, minus 0.5 x half the boxes on a distractor
    both = format_boxes([EVIDENCE, Box(400, 300, 600, 450)])
    assert grounding_reward(both, positive) == pytest.approx(2 / 3 - 0.25)
    assert grounding_reward(format_boxes([EVIDENCE]), variants["random_masked"]) == 1.0
    assert grounding_reward(format_boxes([EVIDENCE]), variants["counterfactual"]) is None


def test_grounding_modes_and_limits(variants):
    positive = variants["positive"]
    shifted = format_boxes([Box(150, 100, 350, 250)])  # overlap 150x150 of union 250x150: IoU 0.6
    assert grounding_reward(shifted, positive, config=RewardConfig(grounding_mode="mean_iou")) == pytest.approx(0.6)
    assert grounding_reward(shifted, positive, config=RewardConfig(grounding_mode="iou2")) == pytest.approx(0.36)
    assert grounding_reward(shifted, positive, config=RewardConfig(grounding_mode="giou")) == pytest.approx(0.8)
    assert grounding_reward(shifted, positive, config=RewardConfig(iou_threshold=0.7)) == 0.0
    spray = format_boxes([EVIDENCE] * 3)
    assert grounding_reward(spray, positive, config=RewardConfig(max_boxes=2)) == 0.0
    assert grounding_reward(spray, positive) == pytest.approx(0.5)  # P = 1/3, R = 1


def test_counterfactual_no_box_reward(variants):
    config = RewardConfig(counterfactual_no_box_reward=0.5)
    cf = variants["counterfactual"]
    assert grounding_reward("<answer>unknown</answer>", cf, config=config) == 0.5
    assert grounding_reward(format_boxes([EVIDENCE]), cf, config=config) == 0.0


def test_sample_without_evidence_is_not_applicable(make_sample):
    assert grounding_reward(format_boxes([EVIDENCE]), make_sample(evidence=[])) is None


def test_boxes_are_read_in_the_model_frame(variants):
    positive = variants["positive"]  # 640x480
    norm = FrameSpec(Frame.NORM_1000)
    # the evidence 100..300 x 100..250 in 0-1000 of 640x480: x / 0.64, y / 0.48
    in_norm = format_boxes([Box(156.25, 208.333, 468.75, 520.833)], decimals=3)
    assert grounding_reward(in_norm, positive, frame=norm) == 1.0
    assert grounding_reward(format_boxes([EVIDENCE]), positive, frame=norm) == 0.0  # pixels misread as 0-1000


def test_average_precision_by_hand():
    gt = [Box(0, 0, 10, 10), Box(20, 20, 30, 30)]
    # ranked: hit, miss, hit -> at recall 1/2 precision 1, at recall 1 precision 2/3;
    # 101-point: recall 0..0.5 (51 points) at 1, 0.51..1 (50 points) at 2/3
    items = [([Box(0, 0, 10, 10), Box(50, 50, 60, 60), Box(20, 20, 30, 30)], gt)]
    ap = average_precision(items, 0.5, scores=[[0.9, 0.8, 0.7]])
    assert ap == pytest.approx((51 * 1 + 50 * 2 / 3) / 101)
    # without scores every box ties: one operating point, precision 2/3 at recall 1
    assert average_precision(items, 0.5) == pytest.approx(2 / 3)
    # image order does not matter when scores tie
    two = [([Box(0, 0, 10, 10)], [Box(0, 0, 10, 10)]), ([Box(5, 5, 6, 6)], [Box(20, 20, 30, 30)])]
    assert average_precision(two) == average_precision(two[::-1]) == pytest.approx(0.5 * 51 / 101)
    # a duplicate of a matched box is a false positive
    assert average_precision([([Box(0, 0, 10, 10)] * 2, [Box(0, 0, 10, 10)])]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="ground-truth"):
        average_precision([([Box(0, 0, 1, 1)], [])])


def test_detection_metrics_thresholds():
    # IoU 0.8 (overlap 8x10 of union 10x10): a hit for thresholds 0.5..0.8 (7 of 10), a miss at 0.85..0.95
    items = [([Box(0, 0, 8, 10)], [Box(0, 0, 10, 10)])]
    metrics = detection_metrics(items)
    assert metrics["AP50"] == 1.0 and metrics["AP75"] == 1.0
    assert metrics["mAP"] == pytest.approx(0.7)
    assert all(math.isfinite(v) for v in metrics.values())
