"""VLM-R1's REC records, both forms, images kept apart from the JSON."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from .conftest import photo, read_jsonl, run_build


def test_vlm_r1_rec_records(tmp_path: Path) -> None:
    images = tmp_path / "coco" / "train2014"
    images.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(photo(80, 60, seed=i)).save(images / f"COCO_train2014_{i:012d}.jpg")
    records = [
        {"image": "COCO_train2014_000000000000.jpg", "problem": "the man on the left", "solution": [4, 6, 30, 50]},
        {"id": 9, "image": "COCO_train2014_000000000001.jpg", "conversations": [
            {"from": "human", "value": "<image>the red car"}, {"from": "gpt", "value": "[40, 10, 70.5, 40]"}]},
        {"image": "COCO_train2014_000000000002.jpg", "problem": "the dog", "solution": [1, 2, 3]},
    ]  # fmt: skip
    (tmp_path / "rec_refcoco_train.json").write_text(json.dumps(records))
    run_build(tmp_path / "out", "source.kind=vlm_r1", f"source.path={tmp_path / 'rec_refcoco_train.json'}",
              f"source.image_root={images}", "variants.make=[positive]")  # fmt: skip
    first, second = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    assert first["group_id"] == "rec_refcoco_train-000000" and first["question"] == "the man on the left"
    assert first["evidence"] == [[4.0, 6.0, 30.0, 50.0]] and first["task"] == "grounding"
    assert first["answer"] == "[4, 6, 30, 50]"
    assert second["group_id"] == "9" and second["evidence"] == [[40.0, 10.0, 70.5, 40.0]]
    (reject,) = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert reject["code"] == "bad_record" and "one box" in reject["reason"]
