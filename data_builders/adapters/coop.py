"""CoOp's few-shot classification datasets, as CLS-RL trains on them (layouts: data_builders.adapters.coop_layouts).

Then, as CoOp and CLS-RL do:

- `classes`: `base` keeps the first half (rounded up) of the sorted labels, `new` the rest, `all` every class;
- `num_shots`: k images per class drawn with the build seed (-1: all);
- the question is CLS-RL's: a dataset prefix ("What type of object is in the photo?"; EuroSAT, UCF101, DTD and
  FGVC-Aircraft have their own), a new line, then " Please choose one from list [ a, b, c]." listing a shuffled
  subset of the kept class names that always holds the true one. How many: int(`choice_fraction` x classes),
  all classes when that is under `choice_min`, at most `choice_max` (CLS-RL: 0.4, 30, 100). The manifest's
  `choices` holds the listed names; `meta.choices_in_question` tells the prompt builder not to list them again.
  Thinking or No-Thinking is the training template's instruction (`data.template`), not part of the question.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from data_builders.adapters.coop_layouts import find_layout
from data_builders.config import BuildConfig, SourceConfig
from data_builders.records import FileImage, Item, stable_seed

# CLS-RL's few-shot-data notebook: the question before the list of class names, per dataset
PREFIXES = {
    "EuroSAT": "What type of object is in the centered satellite photo?",
    "UCF101": "What actions is the person performing in the photo?",
    "DescribableTextures": "What type of texture is in the photo?",
    "FGVCAircraft": "What type of aircraft is in the photo?",
}
DEFAULT_PREFIX = "What type of object is in the photo?"
CHOICES_TEXT = " Please choose one from list [ {choices}]."


def choice_count(num_classes: int, src: SourceConfig) -> int:
    """How many class names a prompt lists (CLS-RL's rule).

    >>> src = SourceConfig(choice_fraction=0.4, choice_min=30, choice_max=100)
    >>> choice_count(1000, src), choice_count(101, src), choice_count(47, src), choice_count(10, src)
    (100, 40, 47, 10)
    """
    k = int(src.choice_fraction * num_classes)
    if k < src.choice_min:
        k = num_classes
    return max(1, min(k, src.choice_max, num_classes))


def read(cfg: BuildConfig) -> Iterator[Item]:
    src = cfg.source
    layout = find_layout(Path(src.path), src.split_file, src.split)
    names = {label: name for _, label, name in layout.entries}
    labels = sorted(names)
    half = math.ceil(len(labels) / 2)
    keep = {"all": labels, "base": labels[:half], "new": labels[half:]}[src.classes]
    by_label: dict[int, list[str]] = defaultdict(list)
    for path, label, _ in layout.entries:
        by_label[label].append(path)
    rng = np.random.default_rng(stable_seed("coop-shots", cfg.seed))
    class_names = [names[label] for label in keep]
    k = choice_count(len(class_names), src)
    prefix = PREFIXES.get(layout.dataset, DEFAULT_PREFIX)
    source = src.name or Path(src.path).name
    for label in keep:
        paths = sorted(by_label[label])
        if 0 <= src.num_shots < len(paths):
            paths = [paths[i] for i in sorted(rng.choice(len(paths), size=src.num_shots, replace=False))]
        for path in paths:
            item_id = str(PurePosixPath(path).with_suffix(""))
            pick = np.random.default_rng(stable_seed("coop-choices", cfg.seed, item_id))
            others = [n for n in class_names if n != names[label]]
            listed = [names[label]] + [others[i] for i in pick.choice(len(others), size=k - 1, replace=False)]
            listed = [listed[i] for i in pick.permutation(len(listed))]
            if src.question_template:
                question = src.question_template.format(choices=", ".join(listed))
            else:
                question = prefix + "\n" + CHOICES_TEXT.format(choices=", ".join(listed))
            yield Item(
                id=item_id,
                source=source,
                image=FileImage(path, str(layout.image_dir)),
                question=question,
                answer=names[label],
                choices=tuple(listed),
                task="classification",
                meta={
                    "label": label,
                    "class_split": src.classes,
                    "dataset": layout.dataset,
                    "choices_in_question": True,
                },
            )
