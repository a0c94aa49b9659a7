"""Typed records: manifest lines round-trip, malformed ones fail naming the field."""

import pytest

from mmrl.types import Box, Sample, Variant

RECORD = {
    "id": "item1-counterfactual",
    "group_id": "item1",
    "variant": "counterfactual",
    "image": "images/item1-cf.png",
    "image_size": [84, 84],
    "question": "What color is the circle?",
    "answer": "unknown",
    "answer_aliases": [],
    "choices": None,
    "evidence": [[28.0, 0.0, 56.0, 28.0]],
    "distractors": [[0.0, 56.0, 28.0, 84.0]],
    "masked": [[28.0, 0.0, 56.0, 28.0]],
    "task": "vqa",
    "source": "synthetic",
    "meta": {"original_answer": "red"},
}


def test_record_round_trip():
    sample = Sample.from_record(RECORD)
    assert sample.variant is Variant.COUNTERFACTUAL
    assert sample.evidence == (Box(28, 0, 56, 28),)
    assert sample.image_size == (84, 84)
    assert sample.to_record() == RECORD


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"variant": "negative"}, "unknown variant 'negative'"),
        ({"image_size": [84]}, "'image_size' must be"),
        ({"image_size": [0, 84]}, "'image_size' must be"),
        ({"evidence": [[5, 5, 1, 1]]}, "x1 < x2"),
        ({"evidence": [[0, 0, 1]]}, "four numbers"),
        ({"evidence": [[0, 0, "a", 1]]}, "four numbers"),
        ({"evidence": [[0, 0, float("nan"), 1]]}, "finite"),
        ({"question": 3}, "'question' must be a string"),
        ({"choices": "a,b"}, "'choices' must be a list"),
    ],
)
def test_malformed_records_name_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        Sample.from_record({**RECORD, **change})


def test_missing_field():
    record = dict(RECORD)
    del record["answer"]
    with pytest.raises(ValueError, match="lacks 'answer'"):
        Sample.from_record(record)


def test_image_path_stays_inside_manifest_folder(tmp_path):
    sample = Sample.from_record(RECORD)
    assert sample.image_path(tmp_path) == (tmp_path / "images/item1-cf.png").resolve()
    escaping = Sample.from_record({**RECORD, "image": "../secret.png"})
    with pytest.raises(ValueError, match="leaves the manifest folder"):
        escaping.image_path(tmp_path)


def test_box_geometry():
    a, b = Box(0, 0, 4, 2), Box(2, 1, 6, 3)
    # overlap [2,4]x[1,2] = 2; union 8 + 8 - 2 = 14
    assert a.intersection(b) == 2.0
    assert a.iou(b) == pytest.approx(2 / 14)
    assert Box.from_xywh([10, 20, 5, 5]) == Box(10, 20, 15, 25)
    assert a.inside(4, 2) and not b.inside(4, 2)
