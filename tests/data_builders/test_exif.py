"""EXIF-tagged photos: the builder stores them upright, and COCO boxes drawn on the stored pixels follow the turn."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from data_builders.images import upright_boxes
from data_builders.records import ItemError

from .conftest import photo, read_jsonl, run_build


def _save_tagged(pixels: np.ndarray, orientation: int, path: Path | io.BytesIO, fmt: str = "JPEG") -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation  # the EXIF Orientation tag
    Image.fromarray(pixels).save(path, format=fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_box_mapping_matches_pillows_turn(orientation: int) -> None:
    # a 1-pixel-exact check: mark the stored box, let Pillow turn the image, find the mark in the upright pixels
    stored = np.zeros((40, 70, 3), np.uint8)  # H=40, W=70
    stored[5:17, 10:30] = 255  # the box [10, 5, 30, 17] in the stored frame
    buffer = io.BytesIO()
    _save_tagged(stored, orientation, buffer, "PNG")
    upright = np.asarray(ImageOps.exif_transpose(Image.open(buffer)))[:, :, 0]
    ys, xs = np.nonzero(upright)
    expected = [[int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]]
    size = (upright.shape[1], upright.shape[0])
    assert upright_boxes([[10, 5, 30, 17]], orientation, size, (70, 40), "t") == expected


def test_frame_rules() -> None:
    # orientation 6: stored 96x64 turns into 64x96 upright
    assert upright_boxes([[10, 8, 30, 28]], 6, (64, 96), (96, 64), "a") == [[36, 10, 56, 30]]
    assert upright_boxes([[10, 8, 30, 28]], 6, (64, 96), (64, 96), "a") == [[10, 8, 30, 28]]  # drawn upright: kept
    assert upright_boxes([[10, 8, 30, 28]], 1, (96, 64), (50, 50), "a") == [[10, 8, 30, 28]]  # no tag: as given
    assert upright_boxes(["junk"], 6, (64, 96), (96, 64), "a") == ["junk"]  # for clean_boxes to reject
    with pytest.raises(ItemError, match="says 50x50"):
        upright_boxes([[10, 8, 30, 28]], 6, (64, 96), (50, 50), "a")


def test_coco_boxes_follow_an_exif_rotated_jpeg(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "train2014").mkdir()
    pixels = photo(96, 64)
    pixels[8:28, 10:30] = (255, 0, 255)  # a magenta object at [10, 8, 30, 28] of the stored pixels
    # a camera's portrait photo: 96x64 stored, tagged "rotate 90 clockwise" (6): 64x96 upright
    _save_tagged(pixels, 6, root / "train2014" / "rot.jpg")
    _save_tagged(pixels, 1, root / "train2014" / "plain.jpg")
    _save_tagged(pixels, 6, root / "train2014" / "odd.jpg")
    box = [10, 8, 20, 20]  # xywh
    data = {
        "images": [{"id": 1, "file_name": "rot.jpg", "width": 96, "height": 64},
                   {"id": 2, "file_name": "plain.jpg", "width": 96, "height": 64},
                   {"id": 3, "file_name": "odd.jpg", "width": 80, "height": 80}],
        "categories": [{"id": 1, "name": "kite"}],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": box, "iscrowd": 0} for i in (1, 2, 3)],
    }  # fmt: skip
    (root / "annotations" / "instances_train2014.json").write_text(json.dumps(data))
    summary = run_build(tmp_path / "out", "source.kind=coco", f"source.path={root}", "variants.make=[positive]")
    records = {r["group_id"]: r for r in read_jsonl(tmp_path / "out" / "manifest.jsonl")}
    assert summary["items"] == 2
    rot = records["1-1"]
    # upright frame: x' = H - y, y' = x with H = 64: [64 - 28, 10, 64 - 8, 30]
    assert rot["image_size"] == [64, 96] and rot["evidence"] == [[36.0, 10.0, 56.0, 30.0]]
    assert records["2-1"]["evidence"] == [[10.0, 8.0, 30.0, 28.0]]
    # the stored image is upright and the magenta object sits inside the turned box
    stored = np.asarray(Image.open(tmp_path / "out" / rot["image"]).convert("RGB")).astype(int)
    magenta = (stored[:, :, 0] > 200) & (stored[:, :, 1] < 60) & (stored[:, :, 2] > 200)
    ys, xs = np.nonzero(magenta)
    assert stored.shape[:2] == (96, 64)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (36, 10, 56, 30)
    rejects = {r["id"]: r for r in read_jsonl(tmp_path / "out" / "rejects.jsonl")}
    assert rejects["3-1"]["code"] == "size_mismatch" and "says 80x80" in rejects["3-1"]["reason"]
