"""Each kind of bad input goes to the rejects file with its reason; the good records are all kept."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_builders.build import main
from mmrl.errors import UserError

from .conftest import photo, read_jsonl, run_build, write_jsonl


def _row(name: str, **extra: object) -> dict:
    return {"id": name, "image": f"{name}.png", "question": "What?", "answer": "x", "boxes": [[2, 2, 12, 12]], **extra}


def test_each_bad_record_is_rejected_with_its_reason(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    good = photo(48, 40)
    for name in ("good", "outside_box", "inverted", "zero", "empty_q", "dup"):
        Image.fromarray(good).save(root / f"{name}.png")
    buffer = io.BytesIO()
    Image.fromarray(good).save(buffer, "PNG")
    (root / "truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    Image.new("L", (20000, 20000)).save(root / "bomb.png")  # 400 Mpx of zeros compress to a few hundred kB
    (tmp_path / "secret.png").write_bytes(buffer.getvalue())
    rows = [
        _row("good"),
        _row("missing"),
        _row("truncated"),
        _row("corrupt"),
        _row("bomb"),
        {**_row("escape"), "image": "../secret.png"},
        _row("outside_box", boxes=[[100, 100, 120, 120]]),
        _row("inverted", boxes=[[20, 20, 10, 10]]),
        _row("zero", boxes=[[5, 5, 5, 10]]),
        {**_row("empty_q"), "question": "   "},
        '{"id": "not-utf8", "image": "good.png", "question": "caf\xe9?", "answer": "x"}'.encode("latin-1"),
        _row("dup"),
        {**_row("dup"), "question": "again?"},
        _row("clipped", image="good.png", boxes=[[-5, -5, 12, 12]]),
    ]
    write_jsonl(root / "in.jsonl", rows)
    summary = run_build(tmp_path / "out", f"source.path={root / 'in.jsonl'}")
    rejects = {r["id"]: r for r in read_jsonl(tmp_path / "out" / "rejects.jsonl") if "variant" not in r}
    expected = {
        "missing": "missing_image",
        "truncated": "corrupt_image",
        "corrupt": "corrupt_image",
        "bomb": "too_many_pixels",
        "escape": "path_outside",
        "outside_box": "bad_box",
        "inverted": "bad_box",
        "zero": "bad_box",
        "empty_q": "empty_question",
        "in-000011": "not_utf8",
        "dup": "duplicate_id",
    }
    assert {k: rejects[k]["code"] for k in expected} == expected
    assert "inverted" in rejects["inverted"]["reason"] and "leaves the dataset folder" in rejects["escape"]["reason"]
    groups = {r["group_id"] for r in read_jsonl(tmp_path / "out" / "manifest.jsonl")}
    assert groups == {"good", "dup", "clipped"} and summary["items"] == 3
    clipped = [r for r in read_jsonl(tmp_path / "out" / "manifest.jsonl") if r["group_id"] == "clipped"][0]
    assert clipped["evidence"] == [[0.0, 0.0, 12.0, 12.0]] and clipped["meta"]["clipped_boxes"] == 1


def _modes(root: Path) -> dict[str, Image.Image]:
    rgb = Image.fromarray(photo(40, 30))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    sixteen = Image.fromarray((np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50).astype(np.uint16))
    return {
        "gray.png": rgb.convert("L"),
        "rgba.png": rgba,
        "palette.png": rgb.convert("P"),
        "sixteen.png": sixteen,
        "cmyk.jpg": rgb.convert("CMYK"),
        "mono.png": rgb.convert("1"),
    }


def test_image_modes_become_rgb(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    rows = []
    for name, image in _modes(root).items():
        image.save(root / name)
        rows.append({"id": name, "image": name, "question": "What?", "answer": "x", "boxes": [[2, 2, 12, 12]]})
    write_jsonl(root / "in.jsonl", rows)
    summary = run_build(tmp_path / "out", f"source.path={root / 'in.jsonl'}")
    assert summary["items"] == len(rows) and summary["rejects"] == 0
    for record in read_jsonl(tmp_path / "out" / "manifest.jsonl"):
        stored = Image.open(tmp_path / "out" / record["image"])
        assert stored.mode == "RGB" and stored.size == (40, 30)
    sixteen = [r for r in read_jsonl(tmp_path / "out" / "manifest.jsonl") if r["id"] == "sixteen.png:positive"][0]
    values = np.asarray(Image.open(tmp_path / "out" / sixteen["image"]))
    assert values.max() > 200  # scaled from 16 bits, not clipped to white or cut to the low byte


def test_exif_rotated_jpeg_is_stored_upright(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    pixels = photo(60, 40)  # stored landscape; orientation 6 means "rotate 90 clockwise to view"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(root / "rot.jpg", exif=exif.tobytes(), quality=95)
    write_jsonl(root / "in.jsonl", [{"id": "r", "image": "rot.jpg", "question": "Q?", "answer": "a",
                                     "boxes": [[2, 40, 20, 58]]}])  # fmt: skip
    run_build(tmp_path / "out", f"source.path={root / 'in.jsonl'}")
    pos = read_jsonl(tmp_path / "out" / "manifest.jsonl")[0]
    assert pos["image_size"] == [40, 60]
    assert Image.open(tmp_path / "out" / pos["image"]).size == (40, 60)
    assert pos["image"].endswith(".png")  # re-encoded upright, not a copy of the rotated bytes


def test_user_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="input file not found"):
        main(["--input", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")])
    with pytest.raises(UserError, match="did you mean 'num_items'"):
        main(["source.kind=synthetic", "source.num_itms=3", "--out", str(tmp_path / "o")])
    with pytest.raises(UserError, match="no output folder"):
        main(["source.kind=synthetic"])
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"source": {"kind": "synthetic"}, "variants": {"fill": "sparkles"}}))
    with pytest.raises(UserError, match="variants.fill"):
        main([str(config), "--out", str(tmp_path / "o")])
