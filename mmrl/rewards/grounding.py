"""Box matching in image pixels: one-to-one matching by IoU, precision/recall/F1, continuous IoU scores.

Shared by the grounding reward and by `mmrl eval` (AP lives in `metrics.py`). One-to-one matching is what
defeats the "same box repeated many times" hack: each evidence box is matched at most once, so copies only
lower precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mmrl.boxes import FrameSpec, clip_box
from mmrl.rewards.config import RewardConfig
from mmrl.rewards.parsing import box_from_candidate, parse_box_candidates
from mmrl.types import Box, Sample, Variant

DEFAULT_CONFIG = RewardConfig()
DEFAULT_FRAME = FrameSpec()


def _as_array(boxes: Sequence[Box]) -> np.ndarray:
    return np.array([b.to_list() for b in boxes], dtype=np.float64).reshape(-1, 4)


def _pairwise(pred: Sequence[Box], gt: Sequence[Box]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intersection, union, enclosing-box area), each (len(pred), len(gt))."""
    p, g = _as_array(pred)[:, None, :], _as_array(gt)[None, :, :]
    with np.errstate(invalid="ignore", over="ignore"):
        w = np.clip(np.minimum(p[..., 2], g[..., 2]) - np.maximum(p[..., 0], g[..., 0]), 0, None)
        h = np.clip(np.minimum(p[..., 3], g[..., 3]) - np.maximum(p[..., 1], g[..., 1]), 0, None)
        inter = w * h
        union = (p[..., 2] - p[..., 0]) * (p[..., 3] - p[..., 1]) + (g[..., 2] - g[..., 0]) * (g[..., 3] - g[..., 1])
        union = union - inter
        enclose = (np.maximum(p[..., 2], g[..., 2]) - np.minimum(p[..., 0], g[..., 0])) * (
            np.maximum(p[..., 3], g[..., 3]) - np.minimum(p[..., 1], g[..., 1])
        )
    return inter, union, enclose


def iou_matrix(pred: Sequence[Box], gt: Sequence[Box]) -> np.ndarray:
    """(len(pred), len(gt)) IoU of every pair.

    >>> iou_matrix([Box(0, 0, 2, 2)], [Box(1, 0, 3, 2), Box(5, 5, 6, 6)]).round(3).tolist()
    [[0.333, 0.0]]
    """
    inter, union, _ = _pairwise(pred, gt)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        iou = inter / union
    # boxes of 1e300 pixels overflow to inf/inf: such a pair counts as no overlap rather than NaN
    return np.clip(np.nan_to_num(iou, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0)


def giou_matrix(pred: Sequence[Box], gt: Sequence[Box]) -> np.ndarray:
    """Generalised IoU in [-1, 1]: IoU minus the share of the enclosing box that neither box covers.

    >>> giou_matrix([Box(0, 0, 1, 1)], [Box(2, 0, 3, 1)]).round(3).tolist()  # enclosing 3, union 2
    [[-0.333]]
    """
    _, union, enclose = _pairwise(pred, gt)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        giou = iou_matrix(pred, gt) - (enclose - union) / enclose
    return np.clip(np.nan_to_num(giou, nan=-1.0, posinf=-1.0, neginf=-1.0), -1.0, 1.0)


def match_pairs(weights: np.ndarray, method: Literal["hungarian", "greedy"] = "hungarian") -> list[tuple[int, int]]:
    """One-to-one pairs (row, col) maximising total weight (Hungarian) or taking the best pair first (greedy).

    >>> match_pairs(np.array([[0.9, 0.8], [0.85, 0.0]]))  # Hungarian: 0.8 + 0.85 beats 0.9 + 0.0
    [(0, 1), (1, 0)]
    >>> match_pairs(np.array([[0.9, 0.8], [0.85, 0.0]]), "greedy")
    [(0, 0)]
    """
    if weights.size == 0:
        return []
    if method == "hungarian":
        from scipy.optimize import linear_sum_assignment  # scipy is heavy; only matching needs it

        rows, cols = linear_sum_assignment(weights, maximize=True)
        return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if weights[r, c] > 0]
    pairs, used_r, used_c = [], set(), set()
    for flat in np.argsort(-weights, axis=None, kind="stable"):
        r, c = divmod(int(flat), weights.shape[1])
        if weights[r, c] <= 0:
            break
        if r not in used_r and c not in used_c:
            pairs.append((r, c))
            used_r.add(r)
            used_c.add(c)
    return sorted(pairs)


@dataclass(frozen=True)
class GroundingStats:
    true_positives: int
    precision: float
    recall: float
    f1: float
    mean_iou: float  # matched IoU summed over max(#pred, #gt): missing and extra boxes count as 0


def grounding_stats(
    pred: Sequence[Box],
    gt: Sequence[Box],
    iou_threshold: float = 0.5,
    method: Literal["hungarian", "greedy"] = "hungarian",
) -> GroundingStats:
    """Precision, recall and F1 of a one-to-one matching at `iou_threshold`, and the mean IoU of the best matching.

    >>> s = grounding_stats([Box(0, 0, 10, 10)] * 3, [Box(0, 0, 10, 10), Box(50, 50, 60, 60)])
    >>> s.true_positives, s.precision, s.recall, round(s.f1, 3), round(s.mean_iou, 3)
    (1, 0.3333333333333333, 0.5, 0.4, 0.333)
    """
    if not pred or not gt:
        return GroundingStats(0, 0.0, 0.0, 0.0, 0.0)
    iou = iou_matrix(pred, gt)
    # pairs over the threshold first (count), then IoU breaks ties: maximises the number of true positives
    hit = iou >= iou_threshold
    tp = len(match_pairs(hit * (min(iou.shape) + 1.0 + iou), method))
    mean_iou = sum(iou[r, c] for r, c in match_pairs(iou, method)) / max(len(pred), len(gt))
    precision, recall = tp / len(pred), tp / len(gt)
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return GroundingStats(tp, precision, recall, f1, float(mean_iou))


def continuous_score(pred: Sequence[Box], gt: Sequence[Box], mode: Literal["mean_iou", "giou", "iou2"]) -> float:
    """Best one-to-one matching's score summed over max(#pred, #gt), in [0, 1]; GIoU is mapped to (giou + 1) / 2.

    >>> continuous_score([Box(0, 0, 2, 2)], [Box(1, 0, 3, 2)], "iou2")  # IoU 1/3
    0.1111111111111111
    >>> continuous_score([Box(0, 0, 1, 1)], [Box(2, 0, 3, 1)], "giou")  # GIoU -1/3 -> 1/3
    0.33333333333333337
    """
    if not pred or not gt:
        return 0.0
    if mode == "giou":
        values = (giou_matrix(pred, gt) + 1.0) / 2.0
    else:
        values = iou_matrix(pred, gt) ** (2 if mode == "iou2" else 1)
    total = sum(values[r, c] for r, c in match_pairs(values))
    return float(total) / max(len(pred), len(gt))


def to_pixel_box(box: Box, image_size: tuple[int, int], frame: FrameSpec) -> Box | None:
    """A model-frame box in pixels of the stored image, if it converts and lies inside the image; else None.

    A box may overshoot the image by a rounding error of the frame conversion (1e-6 of the image side).

    >>> from mmrl.boxes import Frame
    >>> to_pixel_box(Box(100, 100, 500, 1000), (640, 480), FrameSpec(Frame.NORM_1000))
    Box(x1=64.0, y1=48.0, x2=320.0, y2=480.0)
    >>> to_pixel_box(Box(0, 0, 1001, 10), (640, 480), FrameSpec(Frame.NORM_1000)) is None
    True
    """
    try:
        pixels = frame.to_pixels(box, image_size)
    except (ValueError, OverflowError, ZeroDivisionError):  # overflow to inf, or a size smart_resize refuses
        return None
    width, height = image_size
    slack_w, slack_h = 1e-6 * width, 1e-6 * height
    if pixels.x1 < -slack_w or pixels.y1 < -slack_h or pixels.x2 > width + slack_w or pixels.y2 > height + slack_h:
        return None
    return clip_box(pixels, image_size)


def predicted_boxes(completion: str, sample: Sample, frame: FrameSpec, limit: int) -> tuple[list[Box], int]:
    """(the completion's valid boxes in pixels, the number of box candidates it wrote, valid or not).

    Over `limit` candidates no box is converted: the caller scores such a spray 0 anyway.
    """
    candidates = parse_box_candidates(completion)
    if len(candidates) > limit:
        return [], len(candidates)
    boxes = (box_from_candidate(c) for c in candidates)
    pixels = (to_pixel_box(b, sample.image_size, frame) for b in boxes if b is not None)
    return [p for p in pixels if p is not None], len(candidates)


def grounding_reward(
    completion: str, sample: Sample, *, config: RewardConfig = DEFAULT_CONFIG, frame: FrameSpec = DEFAULT_FRAME
) -> float | None:
    """Named boxes against the evidence (mode: f1 / mean_iou / giou / iou2), minus the distractor penalty.

    None when the sample has no evidence boxes, and on counterfactuals unless `counterfactual_no_box_reward` is set
    (then: that reward for naming no box, 0 for naming any). More than `max_boxes` candidates score 0.

    >>> s = Sample("1", "g", Variant.POSITIVE, "a.png", (100, 100), "?", "cat", evidence=(Box(0, 0, 50, 50),),
    ...            distractors=(Box(60, 60, 90, 90),))
    >>> grounding_reward("<box>[[0,0,50,50]]</box>", s), grounding_reward("<box>[[0,0,50,50],[60,60,90,90]]</box>", s)
    (1.0, 0.41666666666666663)
    >>> grounding_reward("<answer>cat</answer>", s), grounding_reward("<box>[[0, 0, 100, 100]]</box>", s)
    (0.0, 0.0)
    """
    if sample.variant == Variant.COUNTERFACTUAL:
        if config.counterfactual_no_box_reward is None:
            return None
        return config.counterfactual_no_box_reward if not parse_box_candidates(completion) else 0.0
    if not sample.evidence:
        return None
    pred, num_candidates = predicted_boxes(completion, sample, frame, config.max_boxes)
    if num_candidates > config.max_boxes or not pred:
        return 0.0
    if config.grounding_mode == "f1":
        score = grounding_stats(pred, sample.evidence, config.iou_threshold, config.grounding_matching).f1
    else:
        score = continuous_score(pred, sample.evidence, config.grounding_mode)
    if sample.distractors and config.distractor_penalty:
        on_distractor = (iou_matrix(pred, sample.distractors) >= config.iou_threshold).any(axis=1)
        score -= config.distractor_penalty * float(on_distractor.mean())
    return float(score)
