"""One shard, end to end: open each item's image, localize in batches, make the variants, write images, then the
shard's result file (data_builders.manifest). Runs in a worker process or, with workers <= 1, in the caller's.

Per-item randomness (random-mask placement, noise fill) comes from `stable_seed(seed, item id)`, so an item's
outputs don't depend on which shard or process built it.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from data_builders.adapters.hf import image_column
from data_builders.config import BuildConfig
from data_builders.images import Loaded, decode, encode, load_file, upright_boxes, write_atomic
from data_builders.localize import Localized, Localizer, Target, make_localizer
from data_builders.manifest import write_shard
from data_builders.records import FileImage, HFImage, Item, ItemError, Reject, SynthImage, clean_boxes, stable_seed
from data_builders.synthetic import generate
from data_builders.variants import PixelBox, apply_fill, place_random, snap
from mmrl.types import Box, Sample, Variant

_STATE: dict[str, Any] = {}


@dataclass
class Ready:
    target: Target
    loaded: Loaded
    clipped: int


def init_worker(cfg: BuildConfig) -> None:
    import cv2

    cv2.setNumThreads(1)  # the processes are the parallelism; threads inside them only contend
    _STATE["cfg"] = cfg
    _STATE.pop("localizer", None)


def _localizer(cfg: BuildConfig) -> Localizer:
    if "localizer" not in _STATE:
        _STATE["localizer"] = make_localizer(cfg.localize)
    return _STATE["localizer"]


def file_stem(item_id: str) -> str:
    """A safe, unique file name for an id: readable part plus a hash (ids may hold '/', ':' or collide once cleaned).

    >>> file_stem("a/b c")
    'a_b_c-facd05e8'
    """
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", item_id)[:60].strip("._") or "item"
    return f"{clean}-{hashlib.blake2b(item_id.encode('utf-8'), digest_size=4).hexdigest()}"


def open_image(item: Item, cfg: BuildConfig) -> tuple[Item, Loaded]:
    ref = item.image
    if isinstance(ref, SynthImage):
        synth = generate(cfg.source, cfg.seed, ref.index)
        item = replace(
            item,
            question=synth.question,
            answer=synth.answer,
            aliases=synth.aliases,
            boxes=synth.evidence,
            distractors=synth.distractors,
            meta=synth.meta,
        )
        return item, Loaded(synth.pixels)
    if isinstance(ref, HFImage):
        value = image_column(ref.dataset, ref.split, ref.column)[ref.index][ref.column]
        if isinstance(value, dict) and value.get("bytes"):
            loaded = decode(value["bytes"], cfg.max_pixels, f"row {ref.index}")
            loaded.copy_from = None
            return item, loaded
        path = value.get("path") if isinstance(value, dict) else value
        if not isinstance(path, str) or not path:
            raise ItemError("missing_image", f"row {ref.index}: the image column holds no image")
        root = Path(ref.dataset) if Path(ref.dataset).is_dir() else Path(ref.dataset).parent
        return item, load_file(FileImage(path, str(root)), cfg.max_pixels)
    return item, load_file(ref, cfg.max_pixels)


def prepare(item: Item, cfg: BuildConfig) -> Ready:
    item, loaded = open_image(item, cfg)
    size = (loaded.pixels.shape[1], loaded.pixels.shape[0])
    name = getattr(item.image, "path", item.id)
    raw = upright_boxes(item.boxes, loaded.orientation, size, item.box_frame, name)
    raw_d = upright_boxes(item.distractors, loaded.orientation, size, item.box_frame, name)
    boxes, clipped = clean_boxes(raw, size, "evidence")
    distractors, clipped_d = clean_boxes(raw_d, size, "distractor")
    return Ready(Target(item, loaded.pixels, boxes, distractors), loaded, clipped + clipped_d)


class ShardWriter:
    def __init__(self, cfg: BuildConfig, shard: int) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.folder = f"images/{shard:05d}"
        (self.out / self.folder).mkdir(parents=True, exist_ok=True)
        self.records: list[dict[str, Any]] = []
        self.rejects: list[dict[str, Any]] = []

    def reject(self, item_id: str, code: str, reason: str, variant: str | None = None) -> None:
        self.rejects.append(Reject(item_id, code, reason, variant).to_record())

    def save(self, item_id: str, variant: Variant, pixels: np.ndarray, copy_from: str | None, suffix: str) -> str:
        stem = f"{file_stem(item_id)}_{variant.value}"
        if copy_from is not None and suffix:
            rel = f"{self.folder}/{stem}{suffix}"
            tmp = self.out / f"{rel}.tmp"
            shutil.copyfile(copy_from, tmp)  # the source's own bytes: exactly the decoded pixels, no re-encode
            tmp.replace(self.out / rel)
            return rel
        ext = ".png" if self.cfg.image_format == "png" else ".jpg"
        rel = f"{self.folder}/{stem}{ext}"
        write_atomic(self.out / rel, encode(pixels, self.cfg.image_format, self.cfg.jpeg_quality))
        return rel

    def add(self, ready: Ready, variant: Variant, image: str, masked: list[Box], meta: dict[str, Any]) -> None:
        t = ready.target
        item = t.item
        counterfactual = variant is Variant.COUNTERFACTUAL
        if counterfactual:
            # the answer reward scores giving the original answer on a counterfactual worse than a plain guess
            meta = {**meta, "original_answer": item.answer, "original_aliases": list(item.aliases)}
        sample = Sample(
            id=f"{item.id}:{variant.value}",
            group_id=item.id,
            variant=variant,
            image=image,
            image_size=t.size,
            question=item.question,
            answer=self.cfg.variants.abstain_answer if counterfactual else item.answer,
            answer_aliases=() if counterfactual else item.aliases,
            choices=item.choices,
            evidence=tuple(meta.pop("_evidence")),
            distractors=tuple(meta.pop("_distractors")),
            masked=tuple(masked),
            task=item.task,
            source=item.source,
            meta=meta,
        )
        self.records.append(sample.to_record())


def _boxes(pixel_boxes: list[PixelBox]) -> list[Box]:
    return [Box(float(x1), float(y1), float(x2), float(y2)) for x1, y1, x2, y2 in pixel_boxes]


def make_variants(ready: Ready, found: Localized, writer: ShardWriter) -> None:
    cfg = writer.cfg
    t, item = ready.target, ready.target.item
    seed = stable_seed(cfg.seed, item.id)
    meta = {**item.meta, **found.meta}
    if ready.clipped:
        meta["clipped_boxes"] = ready.clipped
    # a source may list an evidence box among its distractors too (DeFacto's outside_boxes.txt can): evidence wins
    found_distractors = [b for b in found.distractors if b not in found.evidence]
    if len(found_distractors) < len(found.distractors):
        meta["dropped_distractors"] = len(found.distractors) - len(found_distractors)

    def base() -> dict[str, Any]:
        return {**meta, "_evidence": found.evidence, "_distractors": found_distractors}

    copy_from = ready.loaded.copy_from if cfg.copy_positive else None
    image = writer.save(item.id, Variant.POSITIVE, t.pixels, copy_from, ready.loaded.suffix)
    writer.add(ready, Variant.POSITIVE, image, [], base())
    evidence = list(dict.fromkeys(snap(b, t.size) for b in found.evidence))
    for name in cfg.variants.make:
        variant = Variant(name)
        if variant is Variant.POSITIVE:
            continue
        if name in item.prebuilt:
            _import_prebuilt(ready, variant, writer, base())
            continue
        if not evidence:
            writer.reject(item.id, "no_evidence", "no evidence boxes: nothing to mask", name)
            continue
        if variant is Variant.COUNTERFACTUAL:
            boxes = evidence
        else:
            distractors = [snap(b, t.size) for b in found_distractors]
            try:
                boxes = place_random(evidence, distractors, t.size, cfg.variants, np.random.default_rng(seed))
            except ItemError as err:
                writer.reject(item.id, err.code, err.reason, name)
                continue
        pixels = apply_fill(t.pixels, boxes, cfg.variants, seed)
        image = writer.save(item.id, variant, pixels, None, "")
        writer.add(ready, variant, image, _boxes(boxes), {**base(), "fill": cfg.variants.fill})


def _import_prebuilt(ready: Ready, variant: Variant, writer: ShardWriter, meta: dict[str, Any]) -> None:
    cfg, t = writer.cfg, ready.target
    prebuilt = t.item.prebuilt[variant.value]
    try:
        loaded = load_file(prebuilt.image, cfg.max_pixels)
        size = (loaded.pixels.shape[1], loaded.pixels.shape[0])
        if size != t.size:
            raise ItemError("size_mismatch", f"{prebuilt.image.path} is {size[0]}x{size[1]}, the original {t.size}")
        masked, _ = clean_boxes(prebuilt.masked, size, f"{variant.value} masked")
    except ItemError as err:
        writer.reject(t.item.id, err.code, err.reason, variant.value)
        return
    copy_from = loaded.copy_from if cfg.copy_positive else None
    image = writer.save(t.item.id, variant, loaded.pixels, copy_from, loaded.suffix)
    writer.add(ready, variant, image, masked, {**meta, "prebuilt": True})


def run_shard(shard: int, entries: list[Item | Reject]) -> int:
    """Build one shard and write its result file; returns how many entries it handled."""
    cfg: BuildConfig = _STATE["cfg"]
    writer = ShardWriter(cfg, shard)
    localizer = _localizer(cfg)
    batch = max(1, cfg.localize.batch_size)
    for start in range(0, len(entries), batch):
        ready: list[Ready] = []
        for entry in entries[start : start + batch]:
            if isinstance(entry, Reject):
                writer.rejects.append(entry.to_record())
                continue
            try:
                ready.append(prepare(entry, cfg))
            except ItemError as err:
                writer.reject(entry.id, err.code, err.reason)
        results = localizer.localize([r.target for r in ready]) if ready else []
        for r, found in zip(ready, results, strict=True):
            if isinstance(found, ItemError):
                writer.reject(r.target.item.id, found.code, found.reason)
            else:
                make_variants(r, found, writer)

    write_shard(Path(cfg.out), shard, writer.records, writer.rejects)
    return len(entries)
