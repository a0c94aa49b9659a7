"""Resume after a killed build; real photos; the contact sheet."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from data_builders.preview import contact_sheet

from .conftest import read_jsonl, run_build

ROOT = Path(__file__).parents[2]


def test_a_killed_build_resumes_with_no_duplicate_and_no_missing_record(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["source.kind=synthetic", "source.num_items=300", "source.layout=free", "source.image_size=256",
            "source.max_object=60", "variants.fill=blur", "shard_size=10", "workers=2", "progress=false"]  # fmt: skip
    cmd = [sys.executable, "-m", "mmrl.cli", "build", f"out={out}", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
    shards = out / ".shards"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(shards.glob("shard-*.json"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the builder and its workers, mid-build
    proc.wait()
    finished = len(list(shards.glob("shard-*.json")))
    assert 3 <= finished < 30 and not (out / "manifest.jsonl").exists()
    # what a kill in the middle of an image write leaves (zero-byte files under both temporary names)
    (out / "images" / "00029").mkdir(parents=True, exist_ok=True)
    (out / "images" / "00029" / "a.png.tmp").write_bytes(b"")
    (out / "images" / "00029" / ".b.png.tmp4242").write_bytes(b"")
    run_build(out, *args[:-2])  # rerun: same config, in-process this time
    assert not [p for p in (out / "images").rglob("*") if ".tmp" in p.name]  # no temporary file survives a rerun
    records = read_jsonl(out / "manifest.jsonl")
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids))
    rejects = read_jsonl(out / "rejects.jsonl")
    assert len({r["group_id"] for r in records} | {r["id"] for r in rejects}) == 300
    run_build(tmp_path / "fresh", *args[:-2])
    assert (tmp_path / "fresh" / "manifest.jsonl").read_bytes() == (out / "manifest.jsonl").read_bytes()


def test_real_photos_from_scikit_image(tmp_path: Path) -> None:
    from skimage import data

    root = tmp_path / "photos"
    root.mkdir()
    boxes = {"astronaut": [[180, 60, 300, 180]], "coffee": [[200, 80, 380, 260]], "chelsea": [[140, 40, 260, 160]]}
    rows = []
    for name in boxes:
        Image.fromarray(getattr(data, name)()).save(root / f"{name}.jpg", quality=90)
        rows.append({"id": name, "image": f"{name}.jpg", "question": f"What is in the {name} photo?",
                     "answer": name, "boxes": boxes[name]})  # fmt: skip
    from .conftest import write_jsonl

    write_jsonl(root / "in.jsonl", rows)
    summary = run_build(tmp_path / "out", f"source.path={root / 'in.jsonl'}", "variants.fill=blur")
    assert summary["variants"] == {"counterfactual": 3, "positive": 3, "random_masked": 3}
    for record in read_jsonl(tmp_path / "out" / "manifest.jsonl"):
        if record["variant"] == "positive":  # the JPEG's own bytes, unchanged
            assert (tmp_path / "out" / record["image"]).read_bytes() == (
                root / f"{record['group_id']}.jpg"
            ).read_bytes()
    sheet = contact_sheet(tmp_path / "out" / "manifest.jsonl", side=96)
    assert sheet.size == (6 + 3 * 102, 6 + 3 * (96 + 34 + 6))


def test_preview_command(tmp_path: Path) -> None:
    from data_builders.preview import main

    run_build(tmp_path / "out", "source.kind=synthetic", "source.num_items=5")
    assert main([str(tmp_path / "out" / "manifest.jsonl"), "--out", str(tmp_path / "sheet.png"), "--items", "4"]) == 0
    assert Image.open(tmp_path / "sheet.png").size[1] == 6 + 4 * (192 + 34 + 6)
