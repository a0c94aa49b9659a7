"""DeFacto-100K's per-sample folders and the DeFacto-1.5K benchmark JSON, laid out as released."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_builders.build import main
from mmrl.errors import UserError

from .conftest import photo, read_jsonl, run_build


def _sample(root: Path, name: str, files: dict[str, str], seed: int = 0) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    pixels = photo(64, 48, seed=seed)
    Image.fromarray(pixels).save(folder / "original.png")
    smask, rmask = pixels.copy(), pixels.copy()
    smask[10:20, 10:30] = 0  # the evidence box 10,10,30,20
    rmask[30:40, 40:50] = 0  # the random box 40,30,50,40
    Image.fromarray(smask).save(folder / "original_smask.png")
    Image.fromarray(rmask).save(folder / "original_rmask.png")
    for filename, text in files.items():
        (folder / filename).write_text(text, encoding="utf-8")
    return folder


def _release(tmp_path: Path) -> Path:
    root = tmp_path / "defacto_dataset"
    common = {"question.txt": "What is on the sign?\n", "answer.txt": "stop\nSTOP sign\n"}
    # boxes.txt lists every box; sboxes.txt only the evidence; outside_boxes.txt repeats the evidence box once
    _sample(
        root,
        "1",
        {
            **common,
            "boxes.txt": "10 10 30 20\n40 30 60 45\n2 2 8 8\n",
            "sboxes.txt": "10 10 30 20\n",
            "outside_boxes.txt": "40 30 60 45\n10 10 30 20\n",
            "random_boxes.txt": "40 30 50 40\n",
        },
    )
    _sample(root, "2", {**common, "boxes.txt": "1,1,5,5\n", "sboxes.txt": "[10, 10, 30, 20]\n",
                        "outside_boxes.txt": "[[40, 30, 60, 45], [2, 2, 8, 8]]\n", "random_boxes.txt": "40,30,50,40\n"},
            seed=1)  # fmt: skip
    _sample(root, "10", {**common, "sboxes.txt": "", "outside_boxes.txt": "40 30 60 45\n"}, seed=2)
    _sample(root, "3", {**common, "sboxes.txt": "10 10 thirty 20\n"}, seed=3)
    return root


def test_defacto_release_evidence_from_sboxes_and_shipped_masks(tmp_path: Path) -> None:
    root = _release(tmp_path)
    summary = run_build(tmp_path / "out", "source.kind=defacto", f"source.path={root}")
    records = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    by = {(r["group_id"], r["variant"]): r for r in records}
    assert [r["group_id"] for r in records if r["variant"] == "positive"] == ["1", "2", "10"]  # numeric order
    for group in ("1", "2"):
        pos, cf, rm = (by[(group, v)] for v in ("positive", "counterfactual", "random_masked"))
        assert pos["evidence"] == [[10.0, 10.0, 30.0, 20.0]]  # sboxes.txt, never boxes.txt
        assert pos["answer"] == "stop" and pos["answer_aliases"] == ["STOP sign"]
        assert cf["answer"] == "unknown" and cf["masked"] == [[10.0, 10.0, 30.0, 20.0]] and cf["meta"]["prebuilt"]
        assert rm["answer"] == "stop" and rm["masked"] == [[40.0, 30.0, 50.0, 40.0]] and rm["meta"]["prebuilt"]
        shipped = Image.open(root / group / "original_smask.png").tobytes()
        assert Image.open(tmp_path / "out" / cf["image"]).tobytes() == shipped
        shipped = Image.open(root / group / "original_rmask.png").tobytes()
        assert Image.open(tmp_path / "out" / rm["image"]).tobytes() == shipped
        for record in (pos, cf, rm):
            assert not set(map(tuple, record["evidence"])) & set(map(tuple, record["distractors"]))
    assert by[("1", "positive")]["distractors"] == [[40.0, 30.0, 60.0, 45.0]]
    assert by[("1", "positive")]["meta"]["dropped_distractors"] == 1
    assert by[("2", "positive")]["distractors"] == [[40.0, 30.0, 60.0, 45.0], [2.0, 2.0, 8.0, 8.0]]
    # no evidence in sample 10: no counterfactual (masking nothing cannot make "unknown" right), the rest kept
    assert ("10", "counterfactual") not in by and ("10", "random_masked") in by
    rejects = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    codes = {(r["id"], r.get("variant")): r["code"] for r in rejects}
    assert codes == {("10", "counterfactual"): "no_evidence", ("3", None): "bad_box"}
    assert "sboxes.txt line 1" in next(r["reason"] for r in rejects if r["id"] == "3")
    assert summary["variants"] == {"counterfactual": 2, "positive": 3, "random_masked": 3}


def test_defacto_regenerate_masks_the_evidence_here(tmp_path: Path) -> None:
    root = _release(tmp_path)
    run_build(tmp_path / "out", "source.kind=defacto", f"source.path={root}", "source.regenerate=true",
              "variants.fill_color=[255,0,255]")  # fmt: skip
    by = {(r["group_id"], r["variant"]): r for r in read_jsonl(tmp_path / "out" / "manifest.jsonl")}
    cf = by[("1", "counterfactual")]
    assert "prebuilt" not in cf["meta"] and cf["masked"] == [[10.0, 10.0, 30.0, 20.0]]
    pixels = np.asarray(Image.open(tmp_path / "out" / cf["image"]))
    assert (pixels[10:20, 10:30] == [255, 0, 255]).all() and not (pixels[30:40, 40:50] == [255, 0, 255]).all()


def _bench(tmp_path: Path) -> Path:
    root = tmp_path / "defacto_bench"
    (root / "images").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(photo(64, 48, seed=i)).save(root / "images" / f"{i}.jpg")
    records = [
        {"conversations": [
            {"from": "human", "value": "<image>What is on the sign?"},
            {"from": "gpt", "value": "<bbox>[[10,10,30,20],[40,30,60,45]]</bbox><think>The sign reads stop.</think>"
                                     "<answer>stop</answer>"}],
         "images": ["images/0.jpg"]},
        {"messages": [
            {"role": "user", "content": "<image>\nHow many cars?"},
            {"role": "assistant", "content": "<bbox>[[1, 2, 20, 30]]</bbox><think>two</think><answer>2</answer>"}],
         "images": ["images/1.jpg"]},
        {"conversations": [{"from": "human", "value": "<image>Where?"}], "images": ["images/2.jpg"]},
    ]  # fmt: skip
    (root / "defacto_bench.json").write_text(json.dumps(records))
    return root / "defacto_bench.json"


def test_defacto_bench_json_becomes_an_eval_manifest(tmp_path: Path) -> None:
    path = _bench(tmp_path)
    summary = run_build(tmp_path / "out", "source.kind=defacto_bench", f"source.path={path}")
    records = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    assert summary["variants"] == {"counterfactual": 2, "positive": 2, "random_masked": 2}
    first, second = [r for r in records if r["variant"] == "positive"]
    assert first["question"] == "What is on the sign?" and first["answer"] == "stop"
    assert first["evidence"] == [[10.0, 10.0, 30.0, 20.0], [40.0, 30.0, 60.0, 45.0]] and first["image_size"] == [64, 48]
    assert first["id"] == "defacto_bench-000000:positive" and first["task"] == "vqa"
    assert second["question"] == "How many cars?" and second["answer"] == "2"
    assert second["evidence"] == [[1.0, 2.0, 20.0, 30.0]]
    (reject,) = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert reject["code"] == "bad_record" and "assistant turn" in reject["reason"]


def test_defacto_folder_without_samples_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no sample folders"):
        main(["source.kind=defacto", f"source.path={tmp_path / 'empty'}", "--out", str(tmp_path / "o")])
