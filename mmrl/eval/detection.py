"""Detection metrics for `mmrl eval`: AP at an IoU threshold, AP50, AP75 and COCO's mAP over IoU 0.5:0.95.

A VLM names boxes without confidences, so scores are optional: without them every box scores 1.0, all
predictions tie, and the precision/recall curve has one point (AP = precision x recall at 101-point
interpolation). Tied scores are always evaluated as one threshold, so the order of the images never matters.
Matching inside an image is COCO's: predictions in score order each take the best still-unmatched ground-truth
box with IoU at least the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmrl.rewards.grounding import iou_matrix
from mmrl.types import Box

COCO_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def _image_hits(pred: Sequence[Box], gt: Sequence[Box], order: np.ndarray, threshold: float) -> np.ndarray:
    """For each prediction (in `order`), whether it matched a ground-truth box."""
    hits = np.zeros(len(pred), dtype=bool)
    if not pred or not gt:
        return hits
    iou = iou_matrix(pred, gt)
    free = np.ones(len(gt), dtype=bool)
    for i in order:
        candidates = np.where(free & (iou[i] >= threshold), iou[i], -1.0)
        best = int(np.argmax(candidates))
        if candidates[best] >= 0:
            hits[i], free[best] = True, False
    return hits


def average_precision(
    items: Sequence[tuple[Sequence[Box], Sequence[Box]]],
    iou_threshold: float = 0.5,
    scores: Sequence[Sequence[float]] | None = None,
) -> float:
    """COCO-style AP (101 recall points) over images given as (predicted boxes, ground-truth boxes), in pixels.

    >>> gt = [Box(0, 0, 10, 10), Box(20, 20, 30, 30)]
    >>> average_precision([([Box(0, 0, 10, 10)], gt)])  # precision 1, recall 1/2: 51 of 101 points
    0.504950495049505
    >>> average_precision([([Box(0, 0, 10, 10), Box(20, 20, 30, 31)], gt)], 0.95)  # one hit of two
    0.2524752475247525
    """
    num_gt = sum(len(gt) for _, gt in items)
    if num_gt == 0:
        raise ValueError("average precision needs at least one ground-truth box")
    all_scores, all_hits = [], []
    for k, (pred, gt) in enumerate(items):
        image_scores = np.asarray(scores[k] if scores is not None else [1.0] * len(pred), dtype=np.float64)
        if len(image_scores) != len(pred):
            raise ValueError(f"image {k}: {len(pred)} boxes but {len(image_scores)} scores")
        order = np.argsort(-image_scores, kind="stable")
        all_hits.append(_image_hits(pred, gt, order, iou_threshold))
        all_scores.append(image_scores)
    flat_scores, flat_hits = np.concatenate(all_scores), np.concatenate(all_hits)
    if flat_scores.size == 0:
        return 0.0
    order = np.argsort(-flat_scores, kind="stable")
    flat_scores, flat_hits = flat_scores[order], flat_hits[order]
    # evaluate only at the last prediction of each run of equal scores: ties form one operating point
    last_of_tie = np.append(flat_scores[1:] != flat_scores[:-1], True)
    tp = np.cumsum(flat_hits)[last_of_tie]
    seen = np.arange(1, flat_hits.size + 1)[last_of_tie]
    recall, precision = tp / num_gt, tp / seen
    # interpolated precision: the best precision at any recall at least this one
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    points = np.linspace(0.0, 1.0, 101)
    index = np.searchsorted(recall, points, side="left")
    sampled = np.where(index < precision.size, precision[np.minimum(index, precision.size - 1)], 0.0)
    return float(sampled.mean())


def detection_metrics(
    items: Sequence[tuple[Sequence[Box], Sequence[Box]]], scores: Sequence[Sequence[float]] | None = None
) -> dict[str, float]:
    """AP50, AP75 and mAP (mean AP over IoU 0.50, 0.55, ..., 0.95).

    >>> m = detection_metrics([([Box(0, 0, 10, 10)], [Box(0, 0, 10, 10)])])
    >>> m["AP50"], m["AP75"], m["mAP"]
    (1.0, 1.0, 1.0)
    """
    per_threshold = {t: average_precision(items, t, scores) for t in COCO_THRESHOLDS}
    return {
        "AP50": per_threshold[0.5],
        "AP75": per_threshold[0.75],
        "mAP": float(np.mean(list(per_threshold.values()))),
    }
