"""Every adapter on a small fixture made here."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from data_builders.adapters import iter_items
from data_builders.config import BuildConfig
from mmrl.config.loader import load_config

from .conftest import photo, read_jsonl, run_build


def _items(*overrides: str) -> list:
    return list(iter_items(load_config(BuildConfig, None, list(overrides))))


def test_vqa_jsonl_with_answer_lists(tmp_path: Path, vqa_dir: Path) -> None:
    rows = [{"image": "img0.png", "question": "How many?", "answers": ["2", "two", "2"], "boxes": [[1, 1, 9, 9]]}]
    (vqa_dir / "vqa.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (item,) = _items(f"source.path={vqa_dir / 'vqa.jsonl'}")
    assert item.id == "vqa-000001" and item.answer == "2" and item.aliases == ("two", "2")  # repeats kept
    run_build(tmp_path / "out", f"source.path={vqa_dir / 'train.jsonl'}")
    records = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    assert [r["variant"] for r in records[:3]] == ["positive", "counterfactual", "random_masked"]
    first = records[0]
    assert list(first) == ["id", "group_id", "variant", "image", "image_size", "question", "answer", "answer_aliases",
                           "choices", "evidence", "distractors", "masked", "task", "source", "meta"]  # fmt: skip
    assert first["image_size"] == [96, 64] and first["evidence"] == [[10.0, 8.0, 30.0, 28.0]]
    assert (tmp_path / "out" / first["image"]).is_file()


def _coco(tmp_path: Path) -> Path:
    Image.fromarray(photo(80, 60)).save(tmp_path / "a.jpg")
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 80, "height": 60}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10]},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [30, 5, 10, 10]},
            {"id": 12, "image_id": 1, "category_id": 2, "bbox": [50, 30, 20, 20]},
        ],
        "refs": [{"ref_id": 7, "ann_id": 12, "sentences": [{"sent": "the dog on the right"}]}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(data))
    return tmp_path / "coco.json"


def test_coco_detection_and_refs(tmp_path: Path) -> None:
    path = _coco(tmp_path)
    cat, dog = _items("source.kind=coco", f"source.path={path}")
    assert (
        cat.answer == "2" and cat.boxes == [[5, 5, 15, 15], [30, 5, 40, 15]] and cat.distractors == [[50, 30, 70, 50]]
    )
    assert "cat" in cat.question and dog.answer == "1"
    (ref,) = _items("source.kind=coco", f"source.path={path}", "source.coco_mode=refs")
    assert ref.task == "grounding" and ref.answer == "dog" and "the dog on the right" in ref.question
    assert ref.boxes == [[50, 30, 70, 50]] and len(ref.distractors) == 2
    summary = run_build(tmp_path / "out", "source.kind=coco", f"source.path={path}")
    assert summary["items"] == 2


def test_hf_datasets_arrow_and_parquet(tmp_path: Path) -> None:
    import datasets

    images = [Image.fromarray(photo(40, 30, seed=i)) for i in range(3)]
    ds = datasets.Dataset.from_dict(
        {"image": images, "question": ["q a", "q b", "q c"], "answer": ["a", "b", "c"],
         "bbox": [[[1, 1, 10, 10]], [[2, 2, 5, 5]], [[3, 3, 4, 4]]]},
        features=datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                                    "answer": datasets.Value("string"),
                                    "bbox": datasets.Sequence(datasets.Sequence(datasets.Value("float32")))}),
    )  # fmt: skip
    ds.save_to_disk(str(tmp_path / "arrow"))
    ds.to_parquet(str(tmp_path / "data.parquet"))
    for path in (tmp_path / "arrow", tmp_path / "data.parquet"):
        out = tmp_path / f"out-{path.name}"
        args = ["source.kind=hf", f"source.path={path}", "source.boxes_column=bbox", "source.box_format=xywh"]
        summary = run_build(out, *args)
        records = read_jsonl(out / "manifest.jsonl")
        assert summary["items"] == 3 and records[0]["evidence"] == [[1.0, 1.0, 11.0, 11.0]]
        assert records[0]["image_size"] == [40, 30]


def test_synthetic_source_builds_train_and_heldout_splits(tmp_path: Path) -> None:
    config = Path(__file__).parents[2] / "configs" / "build"
    from data_builders.build import main

    for name, split in (("synthetic.yaml", "train"), ("synthetic_heldout.yaml", "heldout")):
        argv = [str(config / name), "--out", str(tmp_path / split), "source.num_items=12", "progress=false"]
        assert main(argv) == 0
    train = {r["group_id"] for r in read_jsonl(tmp_path / "train" / "manifest.jsonl")}
    held = {r["group_id"] for r in read_jsonl(tmp_path / "heldout" / "manifest.jsonl")}
    assert len(train) == len(held) == 12 and not train & held


def test_coco_release_layout_crowd_degenerate_and_plurals(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    Image.fromarray(photo(80, 60)).save(root / "val2017" / "000000000139.jpg")
    data = {
        "images": [{"id": 139, "file_name": "000000000139.jpg", "width": 80, "height": 60}],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "wine glass"}, {"id": 3, "name": "bench"},
                       {"id": 4, "name": "kite"}],
        "annotations": [
            {"id": 1, "image_id": 139, "category_id": 1, "bbox": [5, 5, 10, 10], "iscrowd": 0},
            {"id": 2, "image_id": 139, "category_id": 1, "bbox": [30, 5, 10, 10], "iscrowd": 0},
            {"id": 3, "image_id": 139, "category_id": 2, "bbox": [50, 30, 10, 10], "iscrowd": 0},
            {"id": 4, "image_id": 139, "category_id": 3, "bbox": [0, 40, 80, 20], "iscrowd": 1},
            {"id": 5, "image_id": 139, "category_id": 4, "bbox": [60, 5, 0, 10], "iscrowd": 0},
        ],
    }  # fmt: skip
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    summary = run_build(tmp_path / "out", "source.kind=coco", f"source.path={root}", "variants.make=[positive]")
    records = {r["group_id"]: r for r in read_jsonl(tmp_path / "out" / "manifest.jsonl")}
    assert summary["items"] == 2 and set(records) == {"139-1", "139-2"}
    person = records["139-1"]
    assert person["question"] == "How many people are there?" and person["answer"] == "2"
    assert person["evidence"] == [[5.0, 5.0, 15.0, 15.0], [30.0, 5.0, 40.0, 15.0]]
    assert person["distractors"] == [[50.0, 30.0, 60.0, 40.0]]  # the crowd and the degenerate box are no distractors
    assert records["139-2"]["question"] == "How many wine glasses are there?"
    rejects = {r["id"]: r["code"] for r in read_jsonl(tmp_path / "out" / "rejects.jsonl")}
    assert rejects == {"139-3": "crowd", "139-4": "bad_box"}
