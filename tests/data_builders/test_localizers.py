"""The OCR localizer with the real engine; saliency; combinations; the VLM localizer on a tiny random model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from data_builders.config import LocalizeConfig
from data_builders.localize import Localized, Target, make_localizer
from data_builders.localize.vlm import interpret_reply
from data_builders.records import FileImage, Item, ItemError
from mmrl.boxes import FrameSpec
from mmrl.errors import UserError
from mmrl.types import Box

from .conftest import read_jsonl, run_build, write_jsonl


def _target(pixels: np.ndarray, question: str = "What?", answer: str = "x") -> Target:
    return Target(Item("t", "test", FileImage("t.png", "."), question, answer), pixels, [], [])


@pytest.fixture(scope="module")
def ocr():
    localizer = make_localizer(LocalizeConfig(kind="ocr"))  # the engine loads once for the module
    return localizer


def _text_image() -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    image = Image.new("RGB", (520, 240), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=40)
    spots = {"OPEN DAILY": (30, 30), "COFFEE": (30, 140)}
    for text, xy in spots.items():
        draw.text(xy, text, fill="black", font=font)
    return np.asarray(image), spots


def test_ocr_finds_the_answer_line_and_keeps_the_rest_as_distractors(ocr) -> None:
    pixels, spots = _text_image()
    (found,) = ocr.localize([_target(pixels, "What does the shop sell?", "coffee")])
    assert isinstance(found, Localized) and found.meta["ocr_match"] == "answer"
    (evidence,) = found.evidence
    assert evidence.y1 > 110 and evidence.x1 < 60  # the COFFEE line, not the other
    assert len(found.distractors) == 1 and found.distractors[0].y2 < 110


def test_ocr_unmatched_answer_is_rejected_with_what_it_read(ocr) -> None:
    pixels, _ = _text_image()
    (found,) = ocr.localize([_target(pixels, "What colour is it?", "purple")])
    assert isinstance(found, ItemError) and "COFFEE" in found.reason.upper()


def test_ocr_build_end_to_end(tmp_path: Path) -> None:
    pixels, _ = _text_image()
    Image.fromarray(pixels).save(tmp_path / "sign.png")
    write_jsonl(tmp_path / "in.jsonl", [{"id": "s", "image": "sign.png", "question": "Hours?", "answer": "open daily"}])
    summary = run_build(tmp_path / "out", f"source.path={tmp_path / 'in.jsonl'}", "localize.kind=ocr")
    assert summary["variants"] == {"counterfactual": 1, "positive": 1, "random_masked": 1}
    cf = [r for r in read_jsonl(tmp_path / "out" / "manifest.jsonl") if r["variant"] == "counterfactual"][0]
    assert cf["evidence"][0][1] < 100 and cf["meta"]["localizer"] == "ocr"


def test_saliency_is_flagged_weak() -> None:
    pixels = np.full((120, 160, 3), 90, np.uint8)
    pixels[40:80, 60:110] = (250, 30, 30)
    (found,) = make_localizer(LocalizeConfig(kind="saliency")).localize([_target(pixels)])
    assert isinstance(found, Localized) and found.meta["weak_evidence"] is True
    assert any(b.intersection(Box(60, 40, 110, 80)) > 0 for b in found.evidence)


def test_combined_ocr_proposals_with_saliency_relevance() -> None:
    pixels, _ = _text_image()
    cfg = LocalizeConfig(kind="combine", proposals="ocr", relevance="saliency", max_boxes=5)
    (found,) = make_localizer(cfg).localize([_target(pixels)])
    assert isinstance(found, Localized) and found.meta["localizer"] == "ocr+saliency"
    assert len(found.evidence) + len(found.distractors) == 2


def test_vlm_reply_parsing_and_validation() -> None:
    spec = FrameSpec.for_family("qwen2_vl")  # 0-1000 frame
    found = interpret_reply("<think>the sign</think><box>[[100, 200, 500, 600]]</box>", (200, 100), spec)
    assert found.evidence == [Box(20.0, 20.0, 100.0, 60.0)]
    assert interpret_reply("it is a cat", (200, 100), spec).code == "vlm_unparseable"
    whole = interpret_reply("<box>[[0, 0, 1000, 1000]]</box>", (200, 100), spec)
    assert whole.code == "vlm_invalid_boxes"


def test_vlm_localizer_on_a_tiny_random_model_rejects_garbage_without_crashing(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from mmrl.models.tiny import build_tiny_model

    folder = build_tiny_model("qwen2_5_vl", tmp_path / "tiny")
    for i in range(3):
        Image.fromarray(np.full((56, 56, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    write_jsonl(tmp_path / "in.jsonl", [{"image": f"{i}.png", "question": "Where?", "answer": "x"} for i in range(3)])
    args = [f"source.path={tmp_path / 'in.jsonl'}", "localize.kind=vlm", f"localize.model={folder}",
            "localize.batch_size=2", "localize.max_new_tokens=12"]  # fmt: skip
    try:
        items = run_build(tmp_path / "out", *args)["items"]
    except UserError as err:  # every item rejected: the build ends with that one line
        assert "nothing built: all 3 records rejected" in str(err)
        items = 0
    rejects = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    # a random model names no well-formed box (or, rarely, one by chance): every item is accounted for
    assert items + len(rejects) == 3
    for reject in rejects:
        assert reject["code"] in ("vlm_unparseable", "vlm_invalid_boxes") and reject["reason"].startswith("vlm:")
