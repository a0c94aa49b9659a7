"""Where CoOp's 11 classification datasets keep their labels, read as each one unpacks (CoOp's DATASETS.md and
datasets/*.py; CLS-RL trains on the same files).

`find_layout(path, split_file, split)` returns the image folder, the (image path, label, class name) entries of one
split and the dataset's name, from the first of these that fits `path`:

1. a split file (`source.split_file`, or the `split_zhou_<Name>.json` inside `path`): {"train" | "val" | "test":
   [[image path, label, class name], ...]} with paths relative to the dataset's image folder (oxford_pets/images,
   eurosat/2750, caltech-101/101_ObjectCategories, dtd/images, food-101/images, oxford_flowers/jpg, stanford_cars,
   sun397/SUN397, ucf101/UCF-101-midframes); `path` may be that image folder or the dataset folder above it;
2. FGVC-Aircraft: `images/` (flat), `variants.txt` (one class name a line; the label is its line), and
   `images_variant_{train,val,test}.txt` (`<image id> <class name>` a line; the image is images/<id>.jpg);
3. ImageNet: `classnames.txt` (`<wnid> <class name>` a line) and `images/train/<wnid>/`, `images/val/<wnid>/` (val
   serves as test, as in CoOp); labels follow the sorted wnids;
4. a folder per class (`<path>/<class>/*.jpg`), labels in sorted folder order.

Class names are as CoOp prints them: `_` becomes a space, in every layout. Caltech-101 in folder form drops
`BACKGROUND_Google` and `Faces_easy` and renames airplanes/Faces/Leopards/Motorbikes as CoOp does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from mmrl.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
# split-file dataset name -> its image folder under the dataset folder
IMAGE_DIRS = {
    "OxfordPets": "images",
    "EuroSAT": "2750",
    "Caltech101": "101_ObjectCategories",
    "DescribableTextures": "images",
    "Food101": "images",
    "OxfordFlowers": "jpg",
    "StanfordCars": "",
    "SUN397": "SUN397",
    "UCF101": "UCF-101-midframes",
}
# folder names (as the datasets unpack, lower case) -> dataset name
FOLDER_NAMES = {
    "oxford_pets": "OxfordPets", "eurosat": "EuroSAT", "2750": "EuroSAT", "caltech-101": "Caltech101",
    "caltech101": "Caltech101", "101_objectcategories": "Caltech101", "dtd": "DescribableTextures",
    "food-101": "Food101", "food101": "Food101", "oxford_flowers": "OxfordFlowers", "stanford_cars": "StanfordCars",
    "sun397": "SUN397", "ucf101": "UCF101", "ucf-101-midframes": "UCF101", "imagenet": "ImageNet",
    "fgvc_aircraft": "FGVCAircraft", "fgvc-aircraft-2013b": "FGVCAircraft",
}  # fmt: skip
CALTECH_IGNORED = {"BACKGROUND_Google", "Faces_easy"}
CALTECH_NAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
_SPLIT_NAME = re.compile(r"split_zhou_(\w+)\.json$")


@dataclass
class Layout:
    image_dir: Path
    entries: list[tuple[str, int, str]]  # (image path relative to image_dir, label, class name)
    dataset: str  # CoOp's name (OxfordPets, ...) or "" when not known


def class_name(raw: str) -> str:
    return " ".join(raw.replace("_", " ").split())


def dataset_name(*paths: Path) -> str:
    for path in paths:
        for part in (path.name, path.parent.name):
            if part.lower() in FOLDER_NAMES:
                return FOLDER_NAMES[part.lower()]
    return ""


def _lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}") from None


def _from_split_file(root: Path, split_path: Path, split: str) -> Layout:
    try:
        data = json.loads(split_path.read_text(encoding="utf-8"))
        entries = [(str(p), int(label), class_name(str(name))) for p, label, name in data[split]]
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, ValueError, TypeError) as err:
        raise UserError(f"{split_path}: not a CoOp split file with a '{split}' list ({err})") from None
    match = _SPLIT_NAME.search(split_path.name)
    name = match.group(1) if match else dataset_name(root, split_path.parent)
    sub = IMAGE_DIRS.get(name, "")
    candidates = list(dict.fromkeys([root / sub, split_path.parent / sub, root, split_path.parent]))
    probe = [p for p, _, _ in entries[:20]]
    for folder in candidates:
        if any((folder / p).is_file() for p in probe):
            return Layout(folder, entries, name)
    if not entries:
        return Layout(root, entries, name)
    tried = ", ".join(str(c) for c in candidates)
    raise UserError(f"{split_path}: none of its first images (e.g. {probe[0]}) is under {tried}")


def _fgvc(root: Path, split: str) -> Layout:
    names = _lines(root / "variants.txt")
    labels = {name: i for i, name in enumerate(names)}
    entries = []
    split_path = root / f"images_variant_{split}.txt"
    if not split_path.is_file():
        raise UserError(f"FGVC-Aircraft folder {root} has no {split_path.name}")
    for line in _lines(split_path):
        image_id, _, name = line.partition(" ")
        if name not in labels:
            raise UserError(f"{split_path}: class {name!r} of image {image_id} is not in variants.txt")
        entries.append((f"{image_id}.jpg", labels[name], class_name(name)))
    return Layout(root / "images", entries, "FGVCAircraft")


def _imagenet(root: Path, split: str) -> Layout:
    names = {}
    for line in _lines(root / "classnames.txt"):
        wnid, _, name = line.partition(" ")
        names[wnid] = class_name(name) or wnid
    image_dir = root / "images" / ("train" if split == "train" else "val")
    if not image_dir.is_dir():
        raise UserError(f"ImageNet folder {root} has no {image_dir.relative_to(root)}/")
    wnids = sorted(p.name for p in image_dir.iterdir() if p.is_dir())
    unknown = [w for w in wnids if w not in names]
    if unknown:
        raise UserError(f"{root / 'classnames.txt'} has no name for class folder {unknown[0]}")
    entries = [
        (f"{wnid}/{f.name}", label, names[wnid])
        for label, wnid in enumerate(wnids)
        for f in sorted((image_dir / wnid).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    return Layout(image_dir, entries, "ImageNet")


def _folders(root: Path) -> Layout:
    name = dataset_name(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if name == "Caltech101":
        folders = [f for f in folders if f.name not in CALTECH_IGNORED]
    if not folders:
        raise UserError(f"{root} has no class folders, split_zhou_*.json, variants.txt or classnames.txt")
    rename = CALTECH_NAMES if name == "Caltech101" else {}
    entries = [
        (f"{folder.name}/{f.name}", label, class_name(rename.get(folder.name, folder.name)))
        for label, folder in enumerate(folders)
        for f in sorted(folder.iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    return Layout(root, entries, name)


def find_layout(root: Path, split_file: str, split: str) -> Layout:
    if not root.is_dir():
        raise UserError(f"dataset folder not found: {root}")
    if split_file:
        path = Path(split_file)
        if not path.is_file():
            raise UserError(f"split file not found: {path}")
        return _from_split_file(root, path, split)
    found = sorted(root.glob("split_zhou_*.json"))
    if len(found) > 1:
        raise UserError(f"{root} holds several split files; name one with source.split_file")
    if found:
        return _from_split_file(root, found[0], split)
    if (root / "variants.txt").is_file():
        return _fgvc(root, split)
    if (root / "classnames.txt").is_file():
        return _imagenet(root, split)
    return _folders(root)
