"""`mmrl preview MANIFEST --out sheet.png`: a contact sheet, one row per item with its variants side by side.

Boxes: evidence green, distractors blue, masked regions red (drawn as outlines, so the pixels under them show).
"""

from __future__ import annotations

import argparse
import json
from collections import OrderedDict
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from mmrl.errors import UserError
from mmrl.types import Sample, Variant

COLORS = {"evidence": (0, 200, 0), "distractors": (30, 110, 255), "masked": (230, 0, 0)}
ORDER = (Variant.POSITIVE, Variant.COUNTERFACTUAL, Variant.RANDOM_MASKED)


def read_groups(path: Path, limit: int) -> list[dict[Variant, Sample]]:
    groups: OrderedDict[str, dict[Variant, Sample]] = OrderedDict()
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                sample = Sample.from_record(json.loads(line))
            except (json.JSONDecodeError, ValueError) as err:
                raise UserError(f"{path} line {lineno}: {err}") from None
            if sample.group_id not in groups and len(groups) >= limit:
                continue
            groups.setdefault(sample.group_id, {})[sample.variant] = sample
    return list(groups.values())


def _tile(sample: Sample, root: Path, side: int) -> Image.Image:
    with Image.open(sample.image_path(root)) as opened:
        image = opened.convert("RGB")
    scale = side / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.NEAREST)
    draw = ImageDraw.Draw(image)
    for name in ("distractors", "evidence", "masked"):
        for box in getattr(sample, name):
            xy = [box.x1 * scale, box.y1 * scale, box.x2 * scale - 1, box.y2 * scale - 1]
            draw.rectangle(xy, outline=COLORS[name], width=2)
    return image


def contact_sheet(manifest: Path, limit: int = 12, side: int = 192) -> Image.Image:
    groups = read_groups(manifest, limit)
    if not groups:
        raise UserError(f"{manifest} has no records")
    font = ImageFont.load_default(size=12)
    label_h, pad = 34, 6
    sheet = Image.new("RGB", (pad + len(ORDER) * (side + pad), pad + len(groups) * (side + label_h + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, group in enumerate(groups):
        y = pad + row * (side + label_h + pad)
        for col, variant in enumerate(ORDER):
            x = pad + col * (side + pad)
            sample = group.get(variant)
            if sample is None:
                draw.rectangle([x, y, x + side - 1, y + side - 1], outline=(180, 180, 180))
                draw.text((x + 6, y + 6), f"{variant.value}: rejected", fill=(120, 120, 120), font=font)
                continue
            sheet.paste(_tile(sample, manifest.parent, side), (x, y))
            draw.text((x, y + side + 2), f"{variant.value}: {sample.answer}"[:32], fill=(0, 0, 0), font=font)
        first = next(iter(group.values()))
        draw.text((pad, y + side + 17), first.question[:90], fill=(60, 60, 60), font=font)
    return sheet


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmrl preview", description=__doc__.splitlines()[0])
    parser.add_argument("manifest", help="a manifest.jsonl")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--items", type=int, default=12, help="how many items (rows)")
    parser.add_argument("--size", type=int, default=192, help="tile side in pixels")
    ns = parser.parse_args(argv)
    path = Path(ns.manifest)
    if not path.is_file():
        raise UserError(f"manifest not found: {path}")
    sheet = contact_sheet(path, ns.items, ns.size)
    Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(ns.out, format="PNG", compress_level=6)
    print(f"wrote {ns.out}: {min(ns.items, (sheet.height - 6) // (ns.size + 40))} items")
    return 0
