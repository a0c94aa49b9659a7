"""Hugging Face `datasets` on disk: a `save_to_disk` folder (arrow) or parquet file(s), with an image column.

Columns are named in the config (`image_column`, `question_column`, `answer_column`, optional `aliases_column`,
`boxes_column` in `box_format`, `id_column`). Text columns are read here; images stay in the dataset until a worker
opens its rows (`open_dataset` caches one handle per process; arrow is memory-mapped, nothing is copied).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from data_builders.config import BuildConfig
from data_builders.records import HFImage, Item, Reject
from mmrl.errors import UserError


@lru_cache(maxsize=4)
def open_dataset(path: str, split: str) -> Any:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    if p.is_file() and p.suffix == ".parquet":
        files = [p]
    elif p.is_dir() and not (p / "dataset_info.json").exists() and not (p / "dataset_dict.json").exists():
        files = sorted(p.rglob("*.parquet"))
    else:
        files = []
    if files:
        # read directly: Dataset.from_parquet would write a cache copy under ~/.cache
        return datasets.Dataset(pa.concat_tables([pq.read_table(f) for f in files]))
    if not p.exists():
        raise UserError(f"dataset not found: {path}")
    try:
        loaded = datasets.load_from_disk(str(p))
    except (FileNotFoundError, ValueError) as err:
        raise UserError(f"{path}: not a saved dataset nor parquet ({err})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise UserError(f"{path} has no split '{split}' (has: {', '.join(loaded)})")
        return loaded[split]
    return loaded


@lru_cache(maxsize=4)
def image_column(path: str, split: str, column: str) -> Any:
    """The image column with decoding off: rows give {"bytes", "path"}, decoded by our safe loader instead."""
    import datasets

    dataset = open_dataset(path, split)
    if isinstance(dataset.features.get(column), datasets.Image):
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    return dataset.select_columns([column])


def read(cfg: BuildConfig) -> Iterator[Item | Reject]:
    src = cfg.source
    dataset = open_dataset(src.path, src.hf_split)
    wanted = [src.image_column, src.question_column, src.answer_column]
    wanted += [c for c in (src.aliases_column, src.boxes_column, src.id_column) if c]
    missing = [c for c in wanted if c not in dataset.column_names]
    if missing:
        raise UserError(f"{src.path}: no column {missing[0]!r} (columns: {', '.join(dataset.column_names)})")
    text = dataset.select_columns([c for c in wanted if c != src.image_column])
    source = src.name or Path(src.path).stem
    for index, row in enumerate(text):
        item_id = str(row[src.id_column]) if src.id_column else f"{source}-{index:06d}"
        question, answer = row[src.question_column], row[src.answer_column]
        if isinstance(answer, list):  # VQA-style answer lists: the first is the answer
            answer, aliases = (str(answer[0]) if answer else ""), tuple(str(a) for a in answer[1:])
        else:
            aliases = ()
        if src.aliases_column:
            aliases += tuple(str(a) for a in row[src.aliases_column] or [])
        if not isinstance(question, str) or not isinstance(answer, str):
            yield Reject(item_id, "bad_record", f"row {index}: question and answer must be strings")
            continue
        boxes = row[src.boxes_column] if src.boxes_column else None
        if boxes is not None and src.box_format == "xywh":
            boxes = [[b[0], b[1], b[0] + b[2], b[1] + b[3]] if len(b) == 4 else b for b in boxes]
        yield Item(
            id=item_id,
            source=source,
            image=HFImage(src.path, src.hf_split, index, src.image_column),
            question=question,
            answer=answer,
            aliases=tuple(a for a in dict.fromkeys(aliases) if a != answer),
            boxes=boxes,
        )
