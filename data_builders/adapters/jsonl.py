"""VQA JSONL: one object per line.

    {"image": "path relative to the file", "question": "...", "answer": "..." or "answers": [...],
     "boxes": [[x1, y1, x2, y2], ...], "distractors": [...], "choices": [...], "id": "...", "task": "...", "meta": {}}

`boxes` (evidence) and `distractors` are optional, in pixels. With `answers` (VQA's ten annotator answers) the most
frequent one is the answer and the other distinct ones are aliases. Lines are decoded one by one, so a line that is
not UTF-8 or not JSON is rejected alone. Without an `id`, a line's id is `<file stem>-<line number>`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_builders.config import BuildConfig
from data_builders.records import FileImage, Item, Reject
from mmrl.errors import UserError


def pick_answer(record: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """(answer, aliases) from "answer" or "answers".

    >>> pick_answer({"answers": ["two", "2", "2", "two", "2"]})
    ('2', ('two',))
    """
    if "answer" in record:
        answer = record["answer"]
        if not isinstance(answer, str):
            raise ValueError("'answer' must be a string")
        extra = record.get("answer_aliases") or []
        if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
            raise ValueError("'answer_aliases' must be a list of strings")
        return answer, tuple(extra)
    answers = record.get("answers")
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise ValueError("needs 'answer' (a string) or 'answers' (a non-empty list of strings)")
    counts = Counter(a.strip() for a in answers if a.strip())
    if not counts:
        return "", ()
    ranked = sorted(counts, key=lambda a: (-counts[a], answers.index(a) if a in answers else 0))
    return ranked[0], tuple(ranked[1:])


def parse_record(record: Any, fallback_id: str, root: Path, source: str) -> Item:
    if not isinstance(record, dict):
        raise ValueError(f"a line must be a JSON object, got {type(record).__name__}")
    image = record.get("image")
    if not isinstance(image, str) or not image:
        raise ValueError("'image' (a path relative to the file) is missing")
    question = record.get("question", "")
    if not isinstance(question, str):
        raise ValueError("'question' must be a string")
    answer, aliases = pick_answer(record)
    choices = record.get("choices")
    if choices is not None and (not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)):
        raise ValueError("'choices' must be a list of strings")
    for key in ("boxes", "distractors"):
        if record.get(key) is not None and not isinstance(record[key], list):
            raise ValueError(f"'{key}' must be a list of [x1, y1, x2, y2] boxes")
    meta = record.get("meta") or {}
    if not isinstance(meta, dict):
        raise ValueError("'meta' must be an object")
    return Item(
        id=str(record.get("id", fallback_id)),
        source=source,
        image=FileImage(image, str(root)),
        question=question,
        answer=answer,
        aliases=aliases,
        choices=tuple(choices) if choices is not None else None,
        boxes=record.get("boxes"),
        distractors=record.get("distractors"),
        task=str(record.get("task", "vqa")),
        meta=dict(meta),
    )


def read(cfg: BuildConfig) -> Iterator[Item | Reject]:
    path = Path(cfg.source.path)
    if not path.is_file():
        raise UserError(f"input file not found: {path}")
    source = cfg.source.name or path.stem
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            fallback_id = f"{path.stem}-{lineno:06d}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield Reject(fallback_id, "not_utf8", f"line {lineno} is not valid UTF-8 ({err.reason} at {err.start})")
                continue
            try:
                yield parse_record(json.loads(text), fallback_id, path.parent, source)
            except json.JSONDecodeError as err:
                yield Reject(fallback_id, "bad_record", f"line {lineno} is not JSON ({err.msg})")
            except ValueError as err:
                yield Reject(fallback_id, "bad_record", f"line {lineno}: {err}")
