"""VQAv2-style answers (JSONL and Hugging Face), R1-style solution strings, image paths, box formats, empty builds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from data_builders.build import main
from mmrl.errors import UserError
from mmrl.rewards.matchers import vqa_soft

from .conftest import photo, read_jsonl, run_build, write_jsonl

TEN = [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(["2"] * 7 + ["two"] * 3)]


def _positives(out: Path) -> dict[str, dict]:
    return {r["group_id"]: r for r in read_jsonl(out / "manifest.jsonl") if r["variant"] == "positive"}


def test_vqa_answers_keep_their_repeats_for_the_soft_score(tmp_path: Path, vqa_dir: Path) -> None:
    rows = [
        {"question_id": 262148000, "image": "img0.png", "question": "How many?", "answers": ["yes"] * 10},
        {"question_id": 262148001, "image": "img1.png", "question": "How many?", "answers": TEN},
        {"question_id": 262148002, "image": "img2.png", "question": "How many?", "answer": 3},
        {"id": "r1v", "image": "img0.png", "problem": "What is it?", "solution": "<answer> golden retriever </answer>"},
        {"id": "dfv1", "image": "img1.png", "question": "Where?",
         "solution": "<bbox>[[10,8,30,28]]</bbox><think>the sign</think><answer>stop</answer>"},
        {"id": "bad", "image": "img2.png", "question": "?", "solution": "<answer>a</answer><answer>b</answer>"},
    ]  # fmt: skip
    write_jsonl(vqa_dir / "vqa.jsonl", rows)
    run_build(tmp_path / "out", f"source.path={vqa_dir / 'vqa.jsonl'}", "variants.make=[positive]")
    pos = _positives(tmp_path / "out")
    ten_yes = pos["262148000"]
    assert ten_yes["answer"] == "yes" and ten_yes["answer_aliases"] == ["yes"] * 9
    assert vqa_soft("yes", [ten_yes["answer"], *ten_yes["answer_aliases"]]) == 1.0  # 10/10 humans: 1.0, not 1/3
    seven = pos["262148001"]
    assert seven["answer"] == "2" and sorted(seven["answer_aliases"]) == ["2"] * 6 + ["two"] * 3
    assert vqa_soft("two", [seven["answer"], *seven["answer_aliases"]]) == 1.0  # 3 humans said "two"
    assert pos["262148002"]["answer"] == "3"
    assert pos["r1v"]["answer"] == "golden retriever" and pos["r1v"]["question"] == "What is it?"
    assert pos["dfv1"]["answer"] == "stop" and pos["dfv1"]["evidence"] == [[10.0, 8.0, 30.0, 28.0]]
    (reject,) = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert reject["id"] == "vqa-000006" and reject["code"] == "bad_record" and "<answer>" in reject["reason"]


def test_hf_vqav2_features(tmp_path: Path) -> None:
    import datasets

    answer = datasets.Features({"answer": datasets.Value("string"), "answer_confidence": datasets.Value("string"),
                                "answer_id": datasets.Value("int64")})  # fmt: skip
    features = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                                  "question_id": datasets.Value("int64"), "answers": [answer]})  # fmt: skip
    ds = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(photo(40, 30, seed=i)) for i in range(2)], "question": ["How many?", "Color?"],
         "question_id": [458752000, 458752001], "answers": [TEN, [{**a, "answer": "red"} for a in TEN]]},
        features=features,
    )  # fmt: skip
    ds.save_to_disk(str(tmp_path / "vqav2"))
    run_build(tmp_path / "out", "source.kind=hf", f"source.path={tmp_path / 'vqav2'}", "variants.make=[positive]")
    pos = _positives(tmp_path / "out")
    assert set(pos) == {"458752000", "458752001"}  # question_id is the id, found without id_column
    assert pos["458752000"]["answer"] == "2" and len(pos["458752000"]["answer_aliases"]) == 9
    assert pos["458752001"]["answer_aliases"] == ["red"] * 9


def test_image_root_absolute_and_parent_paths_stay_inside_it(tmp_path: Path) -> None:
    images = tmp_path / "coco" / "train2014"
    images.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(photo(60, 40, seed=i)).save(images / f"{i}.jpg")
    Image.fromarray(photo(60, 40)).save(tmp_path / "secret.jpg")
    (tmp_path / "ann").mkdir()
    rows = [
        {"id": "rel", "image": "train2014/0.jpg", "question": "q?", "answer": "a", "boxes": [[5, 5, 10, 20]]},
        {"id": "abs", "image": str(images / "1.jpg"), "question": "q?", "answer": "a", "boxes": [[5, 5, 10, 20]]},
        {"id": "up", "image": "train2014/../train2014/2.jpg", "question": "q?", "answer": "a"},
        {"id": "out", "image": "../secret.jpg", "question": "q?", "answer": "a"},
        {"id": "abs_out", "image": str(tmp_path / "secret.jpg"), "question": "q?", "answer": "a"},
    ]
    write_jsonl(tmp_path / "ann" / "train.jsonl", rows)
    args = [f"source.path={tmp_path / 'ann' / 'train.jsonl'}", f"source.image_root={tmp_path / 'coco'}"]
    run_build(tmp_path / "out", *args, "source.box_format=xywh", "variants.make=[positive]")
    pos = _positives(tmp_path / "out")
    assert set(pos) == {"rel", "abs", "up"} and pos["rel"]["evidence"] == [[5.0, 5.0, 15.0, 25.0]]  # x, y, w, h
    rejects = {r["id"]: r["code"] for r in read_jsonl(tmp_path / "out" / "rejects.jsonl")}
    assert rejects == {"out": "path_outside", "abs_out": "path_outside"}


def test_a_build_that_writes_nothing_is_an_error(tmp_path: Path, vqa_dir: Path) -> None:
    write_jsonl(vqa_dir / "bad.jsonl", [{"id": f"m{i}", "image": "nope.png", "question": "q", "answer": "a"}
                                        for i in range(3)])  # fmt: skip
    with pytest.raises(UserError, match=r"nothing built: all 3 records rejected \(missing_image x3\); first: m0: "):
        main(["--input", str(vqa_dir / "bad.jsonl"), "--out", str(tmp_path / "o"), "progress=false"])
    (vqa_dir / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="nothing built: the source holds no items"):
        main(["--input", str(vqa_dir / "empty.jsonl"), "--out", str(tmp_path / "o2"), "progress=false"])
    cli = [sys.executable, "-m", "mmrl.cli", "build", "--input", str(vqa_dir / "bad.jsonl"), "--out",
           str(tmp_path / "o3"), "progress=false", "workers=0"]  # fmt: skip
    done = subprocess.run(cli, capture_output=True, text=True, cwd=Path(__file__).parents[2], check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert [ln for ln in done.stderr.splitlines() if "nothing built" in ln]
    assert json.loads((tmp_path / "o3" / "summary.json").read_text())["items"] == 0
