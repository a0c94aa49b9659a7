"""Hugging Face `datasets` on disk: a `save_to_disk` folder (arrow) or parquet file(s), with an image column.

Columns are named in the config (`image_column`, `question_column`, `answer_column`, optional `aliases_column`,
`boxes_column` in `box_format`, `id_column`; `question_id` is the id when the dataset has that column and `id_column`
is unset). VQAv2-style `answers` columns (a list of strings or of {answer, answer_confidence, answer_id}) keep the
ten human answers with their repeats; an `<answer>` tag in the answer column is parsed. Text columns are read here;
images stay in the dataset until a worker opens its rows (`open_dataset` caches one handle per process; arrow is
memory-mapped, nothing is copied).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from data_builders.adapters.common import parse_solution, to_xyxy, vqa_answers
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
    answer_column = src.answer_column
    if answer_column == "answer" and "answer" not in dataset.column_names and "answers" in dataset.column_names:
        answer_column = "answers"  # VQAv2's ten human answers
    wanted = [src.image_column, src.question_column, answer_column]
    id_column = src.id_column or ("question_id" if "question_id" in dataset.column_names else "")
    wanted += [c for c in (src.aliases_column, src.boxes_column, id_column) if c]
    missing = [c for c in wanted if c not in dataset.column_names]
    if missing:
        raise UserError(f"{src.path}: no column {missing[0]!r} (columns: {', '.join(dataset.column_names)})")
    text = dataset.select_columns([c for c in wanted if c != src.image_column])
    source = src.name or Path(src.path).stem
    for index, row in enumerate(text):
        item_id = str(row[id_column]) if id_column else f"{source}-{index:06d}"
        try:
            question, answer, aliases = _texts(row, src, answer_column)
        except ValueError as err:
            yield Reject(item_id, "bad_record", f"row {index}: {err}")
            continue
        boxes = row[src.boxes_column] if src.boxes_column else None
        yield Item(
            id=item_id,
            source=source,
            image=HFImage(src.path, src.hf_split, index, src.image_column),
            question=question.strip(),
            answer=answer,
            aliases=aliases,
            boxes=to_xyxy(boxes, src.box_format),
        )


def _texts(row: dict[str, Any], src: Any, answer_column: str) -> tuple[str, str, tuple[str, ...]]:
    """(question, answer, aliases) of a row; VQA answer lists keep their repeats (the soft score counts them)."""
    question, answer = row[src.question_column], row[answer_column]
    if isinstance(answer, dict) and isinstance(answer.get("answer"), list):
        answer = answer["answer"]  # a Sequence-of-struct feature reads as a dict of columns
    if not isinstance(question, str):
        raise ValueError(f"the question column {src.question_column!r} must hold text")
    if isinstance(answer, list):  # VQAv2: ten human answers, strings or {answer, answer_confidence, answer_id}
        answer, aliases = vqa_answers(answer)
    elif isinstance(answer, str) and "<answer>" in answer.lower():  # R1-V / CLS-RL `solution` strings
        answer, aliases = parse_solution(answer)[0], ()
    elif isinstance(answer, str | int | float) and not isinstance(answer, bool):
        answer, aliases = str(answer).strip(), ()
    else:
        raise ValueError(f"the answer column {answer_column!r} must hold text, a number or a list of answers")
    if src.aliases_column:
        aliases += tuple(str(a) for a in row[src.aliases_column] or [])
    return question, answer, aliases
