"""Detection metrics for `mmrl eval`: AP at an IoU threshold, AP50, AP75 and mAP over IoU 0.5:0.95, two ways.

A VLM names boxes without confidences, so there are two honest definitions:

- **COCO-style** (`coco_average_precision`, the `AP50` / `AP75` / `mAP` columns): the model's box order is its
  confidence (its first box ranks highest), then exactly pycocotools' COCOeval for one class: at most 100 boxes an
  image, detections of all images sorted by rank (a stable sort, so equal ranks keep image order), precision and
  recall after every detection, 101-point interpolation. Comparable with published COCO-style numbers; it depends
  on the order of boxes and of images. tests/rewards/test_metrics.py checks it against pycocotools.
- **Unranked** (`average_precision`, the `*_unranked` columns): every box scores the same (or the given scores),
  and tied scores form one operating point, so the order of boxes and images never matters; without scores the
  curve has one point (AP = precision x recall at 101-point interpolation).

Matching inside an image is COCO's in both: detections in rank order each take the still-unmatched ground-truth
box of highest IoU at least the threshold; on equal IoU the later ground-truth box wins, as in COCOeval's loop.
These are ~40 lines of numpy rather than a pycocotools dependency of the product: its API takes JSON-shaped
dictionaries of a whole dataset and prints to stdout.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmrl.rewards.grounding import iou_matrix
from mmrl.types import Box

# COCOeval's own thresholds (np.linspace, so an IoU exactly at a threshold compares as it does there)
COCO_THRESHOLDS = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))
COCO_MAX_DETECTIONS = 100
Items = Sequence[tuple[Sequence[Box], Sequence[Box]]]


def _image_hits(pred: Sequence[Box], gt: Sequence[Box], order: np.ndarray, threshold: float) -> np.ndarray:
    """For each prediction (matched in `order`), whether it matched a ground-truth box."""
    hits = np.zeros(len(pred), dtype=bool)
    if not pred or not gt:
        return hits
    iou = iou_matrix(pred, gt)
    free = np.ones(len(gt), dtype=bool)
    for i in order:
        candidates = np.where(free & (iou[i] >= threshold), iou[i], -1.0)
        best = len(gt) - 1 - int(np.argmax(candidates[::-1]))  # the last of equal maxima, as COCOeval
        if candidates[best] >= 0:
            hits[i], free[best] = True, False
    return hits


def _interpolated_ap(hits: np.ndarray, num_gt: int, evaluate_at: np.ndarray | None = None) -> float:
    """101-point interpolated AP of detections already in rank order; `evaluate_at` masks the operating points."""
    tp = np.cumsum(hits)
    seen = np.arange(1, hits.size + 1)
    if evaluate_at is not None:
        tp, seen = tp[evaluate_at], seen[evaluate_at]
    recall, precision = tp / num_gt, tp / seen
    # interpolated precision: the best precision at any recall at least this one
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    points = np.linspace(0.0, 1.0, 101)
    index = np.searchsorted(recall, points, side="left")
    sampled = np.where(index < precision.size, precision[np.minimum(index, precision.size - 1)], 0.0)
    return float(sampled.mean())


def _count_gt(items: Items) -> int:
    num_gt = sum(len(gt) for _, gt in items)
    if num_gt == 0:
        raise ValueError("average precision needs at least one ground-truth box")
    return num_gt


def average_precision(
    items: Items, iou_threshold: float = 0.5, scores: Sequence[Sequence[float]] | None = None
) -> float:
    """Unranked AP (101 recall points) over images given as (predicted boxes, ground-truth boxes), in pixels.

    >>> gt = [Box(0, 0, 10, 10), Box(20, 20, 30, 30)]
    >>> average_precision([([Box(0, 0, 10, 10)], gt)])  # precision 1, recall 1/2: 51 of 101 points
    0.504950495049505
    >>> average_precision([([Box(0, 0, 10, 10), Box(20, 20, 30, 31)], gt)], 0.95)  # one hit of two
    0.2524752475247525
    """
    num_gt = _count_gt(items)
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
    return _interpolated_ap(flat_hits, num_gt, last_of_tie)


def coco_average_precision(items: Items, iou_threshold: float = 0.5) -> float:
    """COCO-style AP with each image's box order as confidence (module docstring).

    >>> gt = [Box(0, 0, 10, 10)]
    >>> coco_average_precision([([Box(50, 50, 60, 60), Box(0, 0, 10, 10)], gt)])  # the hit ranks second
    0.5
    >>> coco_average_precision([([Box(0, 0, 10, 10), Box(50, 50, 60, 60)], gt)])  # the hit ranks first
    1.0
    """
    num_gt = _count_gt(items)
    ranks, hits = [], []
    for pred, gt in items:
        kept = list(pred[:COCO_MAX_DETECTIONS])
        ranks.append(np.arange(len(kept)))
        hits.append(_image_hits(kept, gt, np.arange(len(kept)), iou_threshold))
    flat_ranks, flat_hits = np.concatenate(ranks), np.concatenate(hits)
    if flat_ranks.size == 0:
        return 0.0
    return _interpolated_ap(flat_hits[np.argsort(flat_ranks, kind="stable")], num_gt)


def detection_metrics(items: Items) -> dict[str, float]:
    """COCO-style AP50, AP75, mAP (mean over IoU 0.50:0.05:0.95) and the same three unranked (`*_unranked`).

    >>> m = detection_metrics([([Box(0, 0, 10, 10)], [Box(0, 0, 10, 10)])])
    >>> m["AP50"], m["AP75"], m["mAP"], m["mAP_unranked"]
    (1.0, 1.0, 1.0, 1.0)
    """
    coco = [coco_average_precision(items, t) for t in COCO_THRESHOLDS]
    unranked = [average_precision(items, t) for t in COCO_THRESHOLDS]
    out = {}
    for suffix, values in (("", coco), ("_unranked", unranked)):
        out.update({f"AP50{suffix}": values[0], f"AP75{suffix}": values[5], f"mAP{suffix}": float(np.mean(values))})
    return out
