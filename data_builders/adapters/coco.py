"""COCO-style annotations: `images`, `annotations` (bbox [x, y, w, h] in pixels), `categories`. Referring
expressions (`coco_mode=refs`, and the RefCOCO release) are read by `data_builders.adapters.refcoco` with these helpers.

- `coco_mode=detection`: one item per (image, category present): "How many {plural} are there?"; evidence is
  every box of that category, distractors the other boxes of the image. `iscrowd` regions are never instances nor
  evidence: an (image, category) with a crowd region has no true count and is rejected (`crowd`); a degenerate box
  (zero or negative width or height) rejects only its own (image, category) item and is no one's distractor;

`source.path` is the annotation file, or COCO's dataset folder (`annotations/instances_<split>.json`, found when
there is one). Images are read from `source.images_dir` by `file_name`; by default COCO's image folder beside
`annotations/` (`<root>/<split>/`, e.g. train2017) when it exists, else the annotation file's folder.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_builders.config import BuildConfig
from data_builders.records import FileImage, Item, Reject
from mmrl.errors import UserError

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def xyxy(bbox: Any) -> Any:
    # conversion only; clean_boxes in the worker judges the result (zero or negative w/h -> rejected)
    if isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox):
        return [bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]]
    return bbox


def load_instances(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError(f"{path} is not COCO-style (needs 'images', 'annotations', 'categories')")
    return data


PLURALS = {"person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep", "skis": "skis",
           "scissors": "scissors", "broccoli": "broccoli", "bus": "buses"}  # fmt: skip


def plural(noun: str) -> str:
    """COCO's category names in the plural (the last word inflects).

    >>> [plural(n) for n in ("person", "wine glass", "bench", "teddy bear", "knife", "skis", "cell phone")]
    ['people', 'wine glasses', 'benches', 'teddy bears', 'knives', 'skis', 'cell phones']
    """
    head, _, last = noun.rpartition(" ")
    if last in PLURALS:
        word = PLURALS[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        word = last + "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        word = last[:-1] + "ies"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


def degenerate(ann: dict[str, Any]) -> bool:
    bbox = ann.get("bbox")
    return not (isinstance(bbox, list) and len(bbox) == 4 and bbox[2] > 0 and bbox[3] > 0)


@dataclass
class Instances:
    """An instances JSON indexed the way pycocotools' COCO.createIndex does (by id, annotations by image); a few
    lines here because pycocotools is only a test extra of mmrl and prints to stdout while it indexes."""

    images: dict[Any, dict[str, Any]]
    annotations: dict[Any, dict[str, Any]]
    categories: dict[Any, str]
    by_image: dict[Any, list[dict[str, Any]]]

    @classmethod
    def index(cls, data: dict[str, Any]) -> Instances:
        by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for ann in data.get("annotations", []):
            by_image[ann["image_id"]].append(ann)
        return cls(
            images={img["id"]: img for img in data["images"]},
            annotations={ann["id"]: ann for ann in data.get("annotations", [])},
            categories={c["id"]: c["name"] for c in data.get("categories", [])},
            by_image=by_image,
        )

    def category(self, cat_id: Any) -> str:
        return self.categories.get(cat_id, str(cat_id))

    def others(self, ann: dict[str, Any]) -> list[Any]:
        """The boxes of the image's other instances that can be distractors: not crowd, not degenerate."""
        return [
            xyxy(a["bbox"])
            for a in self.by_image[ann["image_id"]]
            if a["id"] != ann["id"] and not a.get("iscrowd") and not degenerate(a)
        ]

    def frame(self, image_id: Any) -> tuple[int, int] | None:
        """The (width, height) the boxes were drawn on: the images entry's, which tells an EXIF-rotated file's stored
        frame from its upright one (data_builders.images.upright_boxes)."""
        img = self.images[image_id]
        w, h = img.get("width"), img.get("height")
        return (w, h) if isinstance(w, int) and isinstance(h, int) else None


def locate(src: Any) -> tuple[Path, str]:
    path = Path(src.path)
    if path.is_dir():
        found = sorted((path / "annotations").glob("instances_*.json")) or sorted(path.glob("instances_*.json"))
        if len(found) != 1:
            names = ", ".join(p.name for p in found) or "none"
            raise UserError(f"{path}: expected one annotations/instances_*.json (found {names}); name the file")
        path = found[0]
    if src.images_dir:
        return path, src.images_dir
    split = path.stem.removeprefix("instances_")
    beside = path.parent.parent / split
    return path, str(beside if path.parent.name == "annotations" and beside.is_dir() else path.parent)


def read(cfg: BuildConfig) -> Iterator[Item | Reject]:
    src = cfg.source
    path, root = locate(src)
    data = load_instances(path)
    source = src.name or path.stem
    coco = Instances.index(data)
    template = src.question_template or "How many {plural} are there?"
    for image_id in sorted(coco.images, key=str):
        anns = coco.by_image.get(image_id, [])
        usable = [a for a in anns if not a.get("iscrowd") and not degenerate(a)]
        for cat_id in sorted({a["category_id"] for a in anns}, key=str):
            name = coco.category(cat_id)
            item_id = f"{image_id}-{cat_id}"
            mine = [a for a in anns if a["category_id"] == cat_id]
            if any(a.get("iscrowd") for a in mine):
                yield Reject(item_id, "crowd", f"{name}: a crowd region (iscrowd=1) leaves the count undefined")
                continue
            bad = [a for a in mine if degenerate(a)]
            if bad:
                yield Reject(item_id, "bad_box", f"annotation {bad[0]['id']}: degenerate bbox {bad[0].get('bbox')}")
                continue
            count = len(mine)
            yield Item(
                id=item_id,
                source=source,
                image=FileImage(coco.images[image_id]["file_name"], root),
                question=template.format(category=name, plural=plural(name)),
                answer=str(count),
                aliases=(NUMBER_WORDS[count],) if count < len(NUMBER_WORDS) else (),
                boxes=[xyxy(a["bbox"]) for a in mine],
                distractors=[xyxy(a["bbox"]) for a in usable if a["category_id"] != cat_id],
                meta={"image_id": image_id, "category": name},
                box_frame=coco.frame(image_id),
            )
