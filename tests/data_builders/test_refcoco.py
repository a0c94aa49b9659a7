"""RefCOCO / RefCOCO+ / RefCOCOg as released: Python 2 `refs(<split_by>).p` pickles beside `instances.json`, images
in refer.py's `images/mscoco/images/train2014`; and the JSON `refs` path of `kind: coco` through the same reader."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
from PIL import Image

from data_builders.adapters import iter_items
from data_builders.adapters.refcoco import load_refs
from data_builders.config import BuildConfig
from data_builders.records import Item, Reject
from mmrl.config.loader import load_config
from mmrl.errors import UserError

from .conftest import photo, read_jsonl, run_build


class Py2Str(bytes):
    """A Python 2 `str`: pickled as BINSTRING bytes, which Python 3 can only load with an `encoding`."""


class Py2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can take a new type
    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2str(self, obj: Py2Str) -> None:
        data = bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[Py2Str] = save_py2str


def py2(value):
    """The layout as Python 2 wrote it: every key and plain string a py2 `str` (bytes); text already bytes stays."""
    if isinstance(value, dict):
        return {py2(k): py2(v) for k, v in value.items()}
    if isinstance(value, list):
        return [py2(v) for v in value]
    if isinstance(value, str):
        return Py2Str(value.encode("ascii"))
    if isinstance(value, bytes):
        return Py2Str(value)
    return value


def write_refs(path: Path, refs: list[dict]) -> None:
    with open(path, "wb") as handle:
        Py2Pickler(handle, protocol=2).dump(py2(refs))


def ref(ref_id: int, ann_id: int, image_id: int, cat: int, split: str, raws: list) -> dict:
    sentences = [
        {"tokens": ["t"], "raw": raw, "sent_id": ref_id * 10 + k, "sent": "lower cased copy"}
        for k, raw in enumerate(raws)
    ]
    return {"image_id": image_id, "split": split, "sentences": sentences, "file_name":
            f"COCO_train2014_{image_id:012d}_{ann_id}.jpg", "category_id": cat, "ann_id": ann_id,
            "sent_ids": [s["sent_id"] for s in sentences], "ref_id": ref_id}  # fmt: skip


@pytest.fixture
def release(tmp_path: Path) -> Path:
    data = tmp_path / "refer_data"
    images = data / "images" / "mscoco" / "images" / "train2014"
    images.mkdir(parents=True)
    for image_id in (1, 2):
        Image.fromarray(photo(96, 64, seed=image_id)).save(images / f"COCO_train2014_{image_id:012d}.jpg")
    folder = data / "refcoco"
    folder.mkdir()
    instances = {
        "images": [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "width": 96, "height": 64} for i in (1, 2)],
        "categories": [{"id": 1, "name": "person", "supercategory": "person"}, {"id": 18, "name": "dog"}],
        "annotations": [
            {"id": 101, "image_id": 1, "category_id": 1, "bbox": [10.5, 8.0, 20.0, 30.0], "iscrowd": 0},
            {"id": 102, "image_id": 1, "category_id": 18, "bbox": [50, 20, 30, 20], "iscrowd": 0},
            {"id": 103, "image_id": 1, "category_id": 1, "bbox": [0, 40, 90, 20], "iscrowd": 1},
            {"id": 104, "image_id": 1, "category_id": 1, "bbox": [70, 2, 0, 5], "iscrowd": 0},
            {"id": 201, "image_id": 2, "category_id": 18, "bbox": [5, 5, 40, 40], "iscrowd": 0},
        ],
    }  # fmt: skip
    (folder / "instances.json").write_text(json.dumps(instances))
    write_refs(folder / "refs(unc).p", [
        # raw sentences: as typed (capitals), one in UTF-8 bytes, one with a lone latin-1 byte
        ref(1, 101, 1, 1, "train", ["The man in RED", b"man near the caf\xc3\xa9"]),
        ref(2, 102, 1, 18, "testA", [b"na\xefve dog"]),
        ref(3, 201, 2, 18, "val", ["dog"]),
        ref(4, 999, 1, 1, "train", ["ghost"]),
    ])  # fmt: skip
    write_refs(folder / "refs(google).p", [ref(5, 201, 2, 18, "train", ["the big dog"])])
    return folder


def _entries(*overrides: str) -> list[Item | Reject]:
    return list(iter_items(load_config(BuildConfig, None, list(overrides))))


def test_pickle_is_python2_and_data_only(release: Path, tmp_path: Path) -> None:
    with pytest.raises(UnicodeDecodeError):  # what a plain pickle.load does with a Python 2 str of non-ASCII bytes
        pickle.loads((release / "refs(unc).p").read_bytes())
    refs = load_refs(release / "refs(unc).p")
    assert refs[0]["ref_id"] == 1 and refs[0]["split"] == "train" and refs[0]["sentences"][0]["sent_id"] == 10
    evil = tmp_path / "refs(evil).p"
    evil.write_bytes(pickle.dumps([{"x": Path("/")}], protocol=2))  # names a class: refused, never imported
    with pytest.raises(UserError, match="refuses pathlib"):
        load_refs(evil)
    (tmp_path / "refs(bad).p").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="cannot read"):
        load_refs(tmp_path / "refs(bad).p")


def test_release_split_raw_sentences_boxes(release: Path) -> None:
    # two pickles in refcoco/: unc is RefCOCO's usual one; split train by default
    entries = _entries("source.kind=refcoco", f"source.path={release}")
    items = {e.id: e for e in entries if isinstance(e, Item)}
    rejects = {e.id: e.code for e in entries if isinstance(e, Reject)}
    assert set(items) == {"ref1-0", "ref1-1"} and rejects == {"ref4": "bad_record"}
    first = items["ref1-0"]
    assert first.question == 'Which object does "The man in RED" refer to? Answer with its category.'
    assert items["ref1-1"].meta["expression"] == "man near the café"  # UTF-8 bytes of a Python 2 str
    assert first.answer == "person" and first.task == "grounding" and first.source == "refcoco_unc"
    assert first.boxes == [[10.5, 8.0, 30.5, 38.0]]  # xywh [10.5, 8, 20, 30] -> xyxy pixels
    assert first.distractors == [[50, 20, 80, 40]]  # not the crowd region, not the zero-width box
    assert first.meta == {"image_id": 1, "ann_id": 101, "expression": "The man in RED", "sent_id": 10,
                          "split": "train"}  # fmt: skip
    assert first.image.path == "COCO_train2014_000000000001.jpg" and first.image.root.endswith("train2014")
    (test_a,) = [e for e in _entries("source.kind=refcoco", f"source.path={release}", "source.split=testA")]
    assert test_a.meta["expression"] == "naïve dog" and test_a.answer == "dog"  # a lone latin-1 byte
    assert [e.id for e in _entries("source.kind=refcoco", f"source.path={release}", "source.split=val")] == ["ref3-0"]
    (google,) = _entries("source.kind=refcoco", f"source.path={release}", "source.split_by=google")
    assert google.id == "ref5-0" and google.source == "refcoco_google" and google.boxes == [[5, 5, 45, 45]]
    with pytest.raises(UserError, match=r"no refs\(umd\).p \(split_by found: google, unc\)"):
        _entries("source.kind=refcoco", f"source.path={release}", "source.split_by=umd")


def test_release_builds_a_manifest(release: Path, tmp_path: Path) -> None:
    summary = run_build(tmp_path / "out", "source.kind=refcoco", f"source.path={release}")
    records = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    assert summary["items"] == 2 and len(records) == 6  # two sentences x three variants
    positive = next(r for r in records if r["id"] == "ref1-0:positive")
    assert positive["evidence"] == [[10.5, 8.0, 30.5, 38.0]] and positive["image_size"] == [96, 64]
    assert positive["distractors"] == [[50.0, 20.0, 80.0, 40.0]]
    counterfactual = next(r for r in records if r["id"] == "ref1-0:counterfactual")
    assert counterfactual["answer"] == "unknown" and counterfactual["masked"]


def test_images_folder_missing_is_one_line(release: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "refcoco"
    moved.parent.mkdir()
    release.rename(moved)
    with pytest.raises(UserError, match="no COCO train2014 folder found.*set source.images_dir"):
        _entries("source.kind=refcoco", f"source.path={moved}")
