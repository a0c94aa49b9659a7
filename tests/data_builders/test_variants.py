"""Masks: counterfactuals cover exactly the evidence, random masks avoid it with the same area; determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_builders.config import VariantsConfig
from data_builders.records import ItemError
from data_builders.variants import apply_fill, place_random, region_mask

from .conftest import read_jsonl, run_build

MAGENTA = "variants.fill_color=[255,0,255]"


def _load(out: Path, record: dict) -> np.ndarray:
    return np.asarray(Image.open(out / record["image"]).convert("RGB")).astype(int)


def test_counterfactual_changes_every_evidence_pixel_and_nothing_else(vqa_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_build(out, f"source.path={vqa_dir / 'train.jsonl'}", MAGENTA)
    records = read_jsonl(out / "manifest.jsonl")
    by_id = {r["id"]: r for r in records}
    for group in ("q0", "q1", "q2"):
        pos, cf = by_id[f"{group}:positive"], by_id[f"{group}:counterfactual"]
        assert cf["answer"] == "unknown" and pos["answer"] == "a thing"
        assert cf["meta"]["original_answer"] == "a thing" and "original_answer" not in pos["meta"]
        assert cf["masked"] == cf["evidence"]
        before, after = _load(out, pos), _load(out, cf)
        inside = region_mask([tuple(int(v) for v in b) for b in cf["masked"]], tuple(pos["image_size"]))
        changed = (before != after).any(axis=2)
        assert changed[inside].all()
        assert not changed[~inside].any()


def test_random_masks_avoid_evidence_and_match_its_area(vqa_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_build(out, f"source.path={vqa_dir / 'train.jsonl'}", MAGENTA, "variants.margin=3")
    by_id = {r["id"]: r for r in read_jsonl(out / "manifest.jsonl")}
    for group in ("q0", "q1", "q2"):
        pos, rm = by_id[f"{group}:positive"], by_id[f"{group}:random_masked"]
        assert rm["answer"] == pos["answer"]
        size = tuple(pos["image_size"])
        masked = region_mask([tuple(int(v) for v in b) for b in rm["masked"]], size)
        near = region_mask(
            [(int(x1) - 3, int(y1) - 3, int(x2) + 3, int(y2) + 3) for x1, y1, x2, y2 in rm["evidence"]], size
        )
        evidence = region_mask([tuple(int(v) for v in b) for b in rm["evidence"]], size)
        assert not (masked & near).any()
        assert abs(masked.sum() - evidence.sum()) <= 0.1 * evidence.sum()
        changed = (_load(out, pos) != _load(out, rm)).any(axis=2)
        assert changed[masked].all() and not changed[~masked].any()


def test_random_masks_prefer_distractors() -> None:
    cfg = VariantsConfig(margin=2)
    rng = np.random.default_rng(0)
    boxes = place_random([(0, 0, 10, 10)], [(60, 40, 80, 60)], (100, 100), cfg, rng)
    ((x1, y1, x2, y2),) = boxes
    assert x1 >= 50 and x2 <= 90 and y1 >= 30 and y2 <= 70  # at least half the mask lies on the distractor


def test_no_room_is_a_reason_not_a_crash() -> None:
    with pytest.raises(ItemError) as err:
        place_random([(5, 5, 55, 55)], [], (60, 60), VariantsConfig(), np.random.default_rng(0))
    assert err.value.code == "no_room_random_mask"


@pytest.mark.parametrize("fill", ["solid", "mean", "blur", "noise", "inpaint"])
def test_every_fill_stays_inside_the_boxes(fill: str) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    out = apply_fill(pixels, [(5, 6, 20, 30)], VariantsConfig(fill=fill), seed=3)
    inside = region_mask([(5, 6, 20, 30)], (50, 40))
    assert (out[~inside] == pixels[~inside]).all()
    assert (out[inside] != pixels[inside]).any()


def _digest(out: Path) -> dict[str, str]:
    files = sorted(p for p in out.rglob("*") if p.is_file() and ".shards" not in p.parts and p.name != "config.yaml")
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.parametrize("fill", ["noise", "blur"])
def test_same_input_and_seed_give_byte_identical_outputs(tmp_path: Path, fill: str) -> None:
    args = ["source.kind=synthetic", "source.num_items=24", "source.layout=free", "source.image_size=96",
            f"variants.fill={fill}", "shard_size=8"]  # fmt: skip
    run_build(tmp_path / "a", *args)
    run_build(tmp_path / "b", *args, "workers=2")  # other process layout, same bytes
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    run_build(tmp_path / "c", *args, "seed=5")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
