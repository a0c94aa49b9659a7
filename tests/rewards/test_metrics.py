"""COCO-style AP against pycocotools' COCOeval on generated detections; the unranked AP's order independence."""

import contextlib
import io
import random

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mmrl.eval.detection import COCO_THRESHOLDS, average_precision, coco_average_precision, detection_metrics
from mmrl.types import Box


def _xywh(box: Box) -> list[float]:
    return [box.x1, box.y1, box.width, box.height]


def pycocotools_ap(items) -> list[float]:
    """AP at each COCO threshold from COCOeval, each image's box order given as descending scores."""
    images = [{"id": k + 1} for k in range(len(items))]
    annotations = [
        {"id": len(images) * 1000 + k * 100 + j, "image_id": k + 1, "category_id": 1, "bbox": _xywh(b),
         "area": b.area, "iscrowd": 0}
        for k, (_, gt) in enumerate(items) for j, b in enumerate(gt)
    ]  # fmt: skip
    detections = [
        {"image_id": k + 1, "category_id": 1, "bbox": _xywh(b), "score": 1.0 / (1 + rank)}
        for k, (pred, _) in enumerate(items) for rank, b in enumerate(pred)
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints its progress
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "evidence"}]}
        gt.createIndex()
        dt = gt.loadRes(detections) if detections else COCO()
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, 0, 0, -1]  # (thresholds, 101 recall points): class 1, all areas
    return [float(np.mean(row)) for row in precision]


def _random_box(rng, grid=12):
    x, y = rng.randint(0, grid), rng.randint(0, grid)
    return Box(x, y, x + rng.randint(1, 6), y + rng.randint(1, 6))


def _random_items(rng):
    items = []
    for _ in range(rng.randint(1, 5)):
        gt = [_random_box(rng) for _ in range(rng.randint(0, 4))]
        pred = [_random_box(rng) for _ in range(rng.randint(0, 6))]
        # copies of ground-truth boxes, and of each other, make exact IoU ties common
        pred += [rng.choice(gt) for _ in range(rng.randint(0, 2))] if gt else []
        pred += [rng.choice(pred) for _ in range(rng.randint(0, 1))] if pred else []
        rng.shuffle(pred)
        items.append((pred, gt))
    return items


def test_coco_ap_equals_pycocotools_on_generated_detections():
    rng = random.Random(16)
    checked = 0
    for _ in range(80):
        items = _random_items(rng)
        if not any(gt for _, gt in items) or not any(pred for pred, _ in items):
            continue
        reference = pycocotools_ap(items)
        ours = [coco_average_precision(items, t) for t in COCO_THRESHOLDS]
        assert ours == pytest.approx(reference, abs=1e-12), items
        checked += 1
    assert checked > 50


def test_more_than_100_boxes_and_iou_ties_as_coco():
    gt = [Box(0, 0, 10, 10)]
    many = [([Box(50, 50, 60, 60)] * 100 + [Box(0, 0, 10, 10)], gt)]  # the hit is box 101: COCO drops it
    assert coco_average_precision(many) == 0.0 == pycocotools_ap(many)[0]
    # the first box overlaps both ground-truth boxes equally (IoU 1/3 each): COCO gives it the later one, so the
    # second box, which overlaps only the first ground-truth box, still finds it free: two hits, AP 1
    tie = [([Box(5, 0, 15, 10), Box(0, 0, 9, 10)], [Box(0, 0, 10, 10), Box(10, 0, 20, 10)])]
    assert coco_average_precision(tie, 0.3) == pytest.approx(1.0)
    assert average_precision(tie, 0.3) == pytest.approx(1.0)
    assert pycocotools_ap(tie)[0] == coco_average_precision(tie, 0.5)


def test_rank_matters_for_coco_not_for_unranked():
    gt = [Box(0, 0, 10, 10)]
    hit_first = [([Box(0, 0, 10, 10), Box(30, 30, 40, 40)], gt)]
    hit_second = [([Box(30, 30, 40, 40), Box(0, 0, 10, 10)], gt)]
    assert coco_average_precision(hit_first) == 1.0
    assert coco_average_precision(hit_second) == pytest.approx(0.5)  # precision 1/2 once recall reaches 1
    assert average_precision(hit_first) == average_precision(hit_second) == pytest.approx(0.5)


def test_detection_metrics_names_both():
    items = [([Box(30, 30, 40, 40), Box(0, 0, 10, 10)], [Box(0, 0, 10, 10)])]
    metrics = detection_metrics(items)
    assert set(metrics) == {"AP50", "AP75", "mAP", "AP50_unranked", "AP75_unranked", "mAP_unranked"}
    assert metrics["mAP"] == pytest.approx(pycocotools_ap(items)[0]) == pytest.approx(0.5)
    assert metrics["mAP_unranked"] == pytest.approx(0.5)


def test_eval_table_names_each_definition(make_sample):
    from mmrl.boxes import FrameSpec
    from mmrl.eval.evaluate import column_definitions, markdown_table, score_rows, summarize
    from mmrl.rewards.config import RewardConfig

    config = RewardConfig(matcher="vqa_soft")
    samples = [make_sample("positive"), make_sample("random_masked")]
    texts = [
        "<think><box>[[100,100,300,250],[400,300,600,450]]</box></think><answer>red</answer>",  # hit, distractor
        "<think><box>[[100,100,300,250]]</box></think><answer>blue</answer>",
    ]
    summary = {
        **summarize(score_rows(texts, samples, config, FrameSpec())),
        "definitions": column_definitions("vqa_soft"),
    }
    every = summary["variants"]["all"]
    # COCO-style, in rank order: the two first boxes hit (recall 1, precision 1), then the distractor box: AP 1
    assert every["AP50"] == pytest.approx(1.0)
    assert every["AP50_unranked"] == pytest.approx(2 / 3)  # one operating point: 2 hits of 3 boxes, recall 1
    table = markdown_table(summary)
    assert "| mAP_unranked |" in table and "`vqa_soft`: official VQA accuracy" in table
    assert "COCO-style" in table and "order-independent" in table


def test_the_direct_template_measures_no_grounding(make_sample):
    # the direct template asks for the answer alone: IoU and AP are not measured (None), never reported as 0
    from mmrl.boxes import FrameSpec
    from mmrl.eval.evaluate import score_rows, summarize
    from mmrl.rewards.config import RewardConfig

    samples = [make_sample("positive"), make_sample("random_masked")]
    rows = score_rows(["red", "blue"], samples, RewardConfig(template="direct"), FrameSpec())
    assert [r["iou"] for r in rows] == [None, None] and [r["gt_boxes"] for r in rows] == [[], []]
    every = summarize(rows)["variants"]["all"]
    assert every["mean_iou"] is None and every["AP50"] is None
    assert every["accuracy"] == pytest.approx(0.5)  # the answers are still scored: "red" is right, "blue" is not
