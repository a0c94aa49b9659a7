"""The synthetic generator: exact evidence, masking removes the answer, determinism, the quickstart layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_builders.config import SourceConfig
from data_builders.synthetic import COLORS, generate

from .conftest import read_jsonl, run_build


def test_evidence_boxes_hold_every_pixel_of_their_objects() -> None:
    cfg = SourceConfig(kind="synthetic", layout="free", image_size=128, min_object=10, max_object=30, max_objects=5)
    for index in range(30):
        item = generate(cfg, 0, index)
        for obj in item.meta["objects"]:
            x1, y1, x2, y2 = (int(v) for v in obj["box"])
            color = np.array(COLORS[obj["color"]])
            patch = (item.pixels[y1:y2, x1:x2] == color).all(axis=2)
            # tight: the object touches all four sides of its box
            assert patch[0].any() and patch[-1].any() and patch[:, 0].any() and patch[:, -1].any()


def test_masking_the_evidence_removes_the_asked_shape(tmp_path: Path) -> None:
    run_build(tmp_path, "source.kind=synthetic", "source.num_items=40", "variants.make=[positive,counterfactual]")
    for record in read_jsonl(tmp_path / "manifest.jsonl"):
        if record["variant"] != "counterfactual":
            continue
        shape = next(s for s in ("circle", "square", "triangle", "star", "diamond", "cross") if s in record["question"])
        asked = [o for o in record["meta"]["objects"] if o["shape"] == shape]
        masked = [list(map(float, b)) for b in record["masked"]]
        assert asked and all(o["box"] in masked for o in asked)  # no object of the asked shape survives


def test_grid_layout_one_object_per_28px_cell_and_a_third_single() -> None:
    cfg = SourceConfig(kind="synthetic")
    singles = 0
    for index in range(150):
        item = generate(cfg, 0, index)
        cells = [(int(o["box"][0]) // 28, int(o["box"][1]) // 28) for o in item.meta["objects"]]
        for o in item.meta["objects"]:
            x1, y1, x2, y2 = o["box"]
            assert x1 // 28 == (x2 - 1) // 28 and y1 // 28 == (y2 - 1) // 28  # inside one cell
        assert len(set(cells)) == len(cells)
        singles += len(cells) == 1
        assert item.pixels.shape == (84, 84, 3)
    assert 0.2 < singles / 150 < 0.5


def test_questions_and_answers_agree_with_the_scene() -> None:
    cfg = SourceConfig(kind="synthetic", layout="free", image_size=160, max_object=30, max_objects=5)
    for index in range(60):
        item = generate(cfg, 3, index)
        objects = item.meta["objects"]
        kind = item.meta["question_type"]
        shape = next(o["shape"] for o in objects if o["shape"] in item.question)
        same = [o for o in objects if o["shape"] == shape]
        if kind == "color":
            assert len(same) == 1 and item.answer == same[0]["color"]
        elif kind == "count":
            assert item.answer == str(len(same))
        elif kind == "existence":
            color = item.question.split()[3]
            assert item.answer == ("yes" if any(o["color"] == color for o in same) else "no")
        assert sorted(map(tuple, item.evidence)) == sorted(tuple(o["box"]) for o in same)


def test_shape_questions_name_a_colour_only_one_object_has() -> None:
    cfg = SourceConfig(kind="synthetic", questions=["shape"])
    singles = 0
    for index in range(80):
        item = generate(cfg, 2, index)
        objects = item.meta["objects"]
        color = item.question.removeprefix("What shape is the ").removesuffix(" object?")
        same = [o for o in objects if o["color"] == color]
        assert len(same) == 1 and item.answer == same[0]["shape"]  # the colour picks one object: its shape
        assert item.evidence == [same[0]["box"]] and len(item.distractors) == len(objects) - 1
        singles += len(objects) == 1
    assert singles < 80  # multi-object scenes too, recoloured where a colour repeated


def test_colour_questions_unchanged_by_the_shape_type() -> None:
    # adding a question type leaves the items of the other types as they were (same seed, same pixels)
    item = generate(SourceConfig(kind="synthetic", questions=["color"]), 0, 5)
    assert (item.question, item.answer, int(item.pixels.sum())) == ("What color is the diamond?", "yellow", 2543965)


def test_same_seed_same_item_other_seed_other_item() -> None:
    cfg = SourceConfig(kind="synthetic")
    a, b, c = generate(cfg, 0, 7), generate(cfg, 0, 7), generate(cfg, 1, 7)
    assert (a.pixels == b.pixels).all() and a.question == b.question
    assert a.id != c.id and not (a.pixels == c.pixels).all()
