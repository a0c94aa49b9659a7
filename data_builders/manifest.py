"""The output folder: per-shard result files, the merged manifest, rejects and summary.

    <out>/manifest.jsonl   one line per sample variant (DESIGN.md, "The data contract")
    <out>/rejects.jsonl    {"id", "code", "reason"[, "variant"]} per rejected item or variant
    <out>/summary.json     counts per variant and per reject code, box-area statistics
    <out>/config.yaml      the resolved build config
    <out>/images/<shard>/  the images
    <out>/.shards/         plan.json (what this folder is building) and shard-NNNNN.json per finished shard

Resuming rests on one rule: a shard's result file is written atomically after all its images, so it exists only
for a finished shard; a rerun skips those and redoes the rest (same names, same bytes), then merges everything.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from data_builders.images import write_atomic

SHARDS = ".shards"


def shard_file(out: Path, index: int) -> Path:
    return out / SHARDS / f"shard-{index:05d}.json"


def write_shard(out: Path, index: int, records: list[dict[str, Any]], rejects: list[dict[str, Any]]) -> None:
    data = json.dumps({"records": records, "rejects": rejects}, ensure_ascii=False)
    write_atomic(shard_file(out, index), data.encode("utf-8"))


def done_shards(out: Path, count: int) -> set[int]:
    return {i for i in range(count) if shard_file(out, i).is_file()}


def read_plan(out: Path) -> dict[str, Any] | None:
    path = out / SHARDS / "plan.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_plan(out: Path, plan: dict[str, Any]) -> None:
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    write_atomic(out / SHARDS / "plan.json", json.dumps(plan, sort_keys=True).encode("utf-8"))


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "min": round(min(values), 6),
        "mean": round(statistics.fmean(values), 6),
        "median": round(statistics.median(values), 6),
        "max": round(max(values), 6),
    }


def summarize(records: list[dict[str, Any]], rejects: list[dict[str, Any]]) -> dict[str, Any]:
    variants = Counter(r["variant"] for r in records)
    per_group_area, per_variant_masked = [], {}
    for r in records:
        w, h = r["image_size"]
        if r["variant"] == "positive":
            per_group_area.append(sum((b[2] - b[0]) * (b[3] - b[1]) for b in r["evidence"]) / (w * h))
        else:
            area = sum((b[2] - b[0]) * (b[3] - b[1]) for b in r["masked"]) / (w * h)
            per_variant_masked.setdefault(r["variant"], []).append(area)
    positives = [r for r in records if r["variant"] == "positive"]
    return {
        "records": len(records),
        "items": len(positives),
        "variants": dict(sorted(variants.items())),
        "rejects": len(rejects),
        "reject_codes": dict(sorted(Counter(r["code"] for r in rejects).items())),
        "evidence_boxes_per_item": _stats([len(r["evidence"]) for r in positives]),
        "evidence_area_fraction": _stats(per_group_area),
        "masked_area_fraction": {k: _stats(v) for k, v in sorted(per_variant_masked.items())},
    }


def merge(out: Path, count: int) -> dict[str, Any]:
    """Concatenate the shard files in order into manifest.jsonl, rejects.jsonl and summary.json."""
    records: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    for i in range(count):
        data = json.loads(shard_file(out, i).read_text(encoding="utf-8"))
        records += data["records"]
        rejects += data["rejects"]
    ids = Counter(r["id"] for r in records)
    duplicates = [k for k, n in ids.items() if n > 1]
    if duplicates:
        raise RuntimeError(f"duplicate manifest ids after merge, e.g. {duplicates[0]!r}")
    summary = summarize(records, rejects)
    write_atomic(out / "manifest.jsonl", _jsonl(records))
    write_atomic(out / "rejects.jsonl", _jsonl(rejects))
    write_atomic(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    return summary


def first_reject(out: Path) -> str:
    """`id: reason` of the first line of rejects.jsonl."""
    with open(out / "rejects.jsonl", encoding="utf-8") as handle:
        record = json.loads(handle.readline())
    return f"{record['id']}: {record['reason']}"


def clear(out: Path) -> None:
    """Remove a previous build's results and images (overwrite=true)."""
    for name in ("manifest.jsonl", "rejects.jsonl", "summary.json"):
        (out / name).unlink(missing_ok=True)
    shards = out / SHARDS
    if shards.is_dir():
        for path in shards.iterdir():
            os.unlink(path)
    shutil.rmtree(out / "images", ignore_errors=True)
