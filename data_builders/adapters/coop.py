"""CoOp-style few-shot classification (CLS-RL's data).

Two layouts: a folder per class (`<path>/<class_name>/*.jpg`, labels in sorted folder order, `_` read as a space),
or CoOp's split file (`split_zhou_*.json`: {"train": [[image path relative to `path`, label, class name], ...],
"val": [...], "test": [...]}). Then, as CoOp does:

- `classes`: `base` keeps the first half (rounded up) of the sorted labels, `new` the rest, `all` every class;
- `num_shots`: k images per class drawn with the build seed (-1: all);
- each prompt lists a shuffled subset of the kept class names that always includes the true one: round(
  `choice_fraction` x classes), at least `choice_min`, at most `choice_max`; `prompt_style=no_thinking` asks for
  the bare class name (CLS-RL's No-Thinking variant). The manifest's `choices` holds the listed names.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_builders.config import BuildConfig, SourceConfig
from data_builders.records import FileImage, Item, stable_seed
from mmrl.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
TEMPLATES = {
    "thinking": "What is shown in this image? Choose one of: {choices}.",
    "no_thinking": "What is shown in this image? Choose one of: {choices}. Answer with the class name only.",
}


def _entries(src: SourceConfig, root: Path) -> list[tuple[str, int, str]]:
    if src.split_file:
        split_path = Path(src.split_file)
        if not split_path.is_file():
            raise UserError(f"split file not found: {split_path}")
        try:
            data = json.loads(split_path.read_text(encoding="utf-8"))
            return [(str(p), int(label), str(name)) for p, label, name in data[src.split]]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, ValueError, TypeError) as err:
            raise UserError(f"{split_path}: not a CoOp split file with a '{src.split}' list ({err})") from None
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise UserError(f"{root} has no class folders")
    return [
        (str(f.relative_to(root)), label, folder.name.replace("_", " "))
        for label, folder in enumerate(folders)
        for f in sorted(folder.iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]


def choice_count(num_classes: int, src: SourceConfig) -> int:
    """How many class names a prompt lists.

    >>> choice_count(100, SourceConfig(choice_fraction=0.5, choice_min=2, choice_max=10))
    10
    >>> choice_count(3, SourceConfig(choice_fraction=0.5, choice_min=2, choice_max=10))
    2
    """
    return min(num_classes, max(src.choice_min, min(src.choice_max, round(src.choice_fraction * num_classes))))


def read(cfg: BuildConfig) -> Iterator[Item]:
    src = cfg.source
    root = Path(src.path)
    if not root.is_dir():
        raise UserError(f"dataset folder not found: {root}")
    entries = _entries(src, root)
    names = {label: name for _, label, name in entries}
    labels = sorted(names)
    half = math.ceil(len(labels) / 2)
    keep = {"all": labels, "base": labels[:half], "new": labels[half:]}[src.classes]
    by_label: dict[int, list[str]] = defaultdict(list)
    for path, label, _ in entries:
        by_label[label].append(path)
    rng = np.random.default_rng(stable_seed("coop-shots", cfg.seed))
    class_names = [names[label] for label in keep]
    k = choice_count(len(class_names), src)
    template = src.question_template or TEMPLATES[src.prompt_style]
    source = src.name or root.name
    for label in keep:
        paths = sorted(by_label[label])
        if 0 <= src.num_shots < len(paths):
            paths = [paths[i] for i in sorted(rng.choice(len(paths), size=src.num_shots, replace=False))]
        for path in paths:
            item_id = f"{names[label]}/{Path(path).stem}"
            pick = np.random.default_rng(stable_seed("coop-choices", cfg.seed, item_id))
            others = [n for n in class_names if n != names[label]]
            listed = [names[label]] + [others[i] for i in pick.choice(len(others), size=k - 1, replace=False)]
            listed = [listed[i] for i in pick.permutation(len(listed))]
            yield Item(
                id=item_id,
                source=source,
                image=FileImage(path, str(root)),
                question=template.format(choices=", ".join(listed)),
                answer=names[label],
                choices=tuple(listed),
                task="classification",
                meta={"label": label, "prompt_style": src.prompt_style, "class_split": src.classes},
            )
