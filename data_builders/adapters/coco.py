"""COCO-style annotations: `images`, `annotations` (bbox [x, y, w, h] in pixels), `categories`; and for
referring expressions (RefCOCO-like) a `refs` list: {"ref_id", "ann_id", "sentences": [{"sent": "..."}]}.

- `coco_mode=detection`: one item per (image, category present): "How many {category} are there?"; evidence is
  every box of that category, distractors the other boxes of the image;
- `coco_mode=refs`: one item per expression; evidence is the referred box, answer its category, task "grounding".

Images are read from `source.images_dir` (default: the annotation file's folder) by `file_name`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_builders.config import BuildConfig
from data_builders.records import FileImage, Item, Reject
from mmrl.errors import UserError

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _xyxy(bbox: Any) -> Any:
    # conversion only; clean_boxes in the worker judges the result (zero or negative w/h -> rejected)
    if isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox):
        return [bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]]
    return bbox


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError(f"{path} is not COCO-style (needs 'images', 'annotations', 'categories')")
    return data


def read(cfg: BuildConfig) -> Iterator[Item | Reject]:
    src = cfg.source
    path = Path(src.path)
    data = _load(path)
    root = str(Path(src.images_dir) if src.images_dir else path.parent)
    source = src.name or path.stem
    images = {img["id"]: img for img in data["images"]}
    categories = {c["id"]: c["name"] for c in data.get("categories", [])}
    by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    annotations = {}
    for ann in data.get("annotations", []):
        by_image[ann["image_id"]].append(ann)
        annotations[ann["id"]] = ann
    if src.coco_mode == "detection":
        template = src.question_template or "How many {category} are there?"
        for image_id in sorted(images, key=str):
            anns = by_image.get(image_id, [])
            for cat_id in sorted({a["category_id"] for a in anns}, key=str):
                name = categories.get(cat_id, str(cat_id))
                mine = [_xyxy(a.get("bbox")) for a in anns if a["category_id"] == cat_id]
                count = len(mine)
                yield Item(
                    id=f"{image_id}-{cat_id}",
                    source=source,
                    image=FileImage(images[image_id]["file_name"], root),
                    question=template.format(category=name),
                    answer=str(count),
                    aliases=(NUMBER_WORDS[count],) if count < len(NUMBER_WORDS) else (),
                    boxes=mine,
                    distractors=[_xyxy(a.get("bbox")) for a in anns if a["category_id"] != cat_id],
                    meta={"image_id": image_id, "category": name},
                )
        return
    template = src.question_template or 'Which object does "{expression}" refer to? Answer with its category.'
    for ref in data.get("refs", []):
        ann = annotations.get(ref.get("ann_id"))
        rid = f"ref{ref.get('ref_id')}"
        if ann is None or ann["image_id"] not in images:
            yield Reject(rid, "bad_record", f"ref {ref.get('ref_id')} names an unknown annotation or image")
            continue
        sentences = [s.get("sent", "") if isinstance(s, dict) else str(s) for s in ref.get("sentences", [])]
        others = [_xyxy(a.get("bbox")) for a in by_image[ann["image_id"]] if a["id"] != ann["id"]]
        for k, sentence in enumerate(sentences):
            yield Item(
                id=f"{rid}-{k}",
                source=source,
                image=FileImage(images[ann["image_id"]]["file_name"], root),
                question=template.format(expression=sentence.strip()) if sentence.strip() else "",
                answer=categories.get(ann["category_id"], str(ann["category_id"])),
                boxes=[_xyxy(ann.get("bbox"))],
                distractors=others,
                task="grounding",
                meta={"image_id": ann["image_id"], "expression": sentence},
            )
