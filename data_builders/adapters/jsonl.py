"""VQA records in JSON Lines (or one JSON list in a `.json` file): one object per question.

    {"image": "path", "question": "...", "answer": "..." | 7 | "answers": [...] | "solution": "<answer>..</answer>",
     "boxes": [[x1, y1, x2, y2], ...], "distractors": [...], "choices": [...], "id" | "question_id": ...,
     "task": "...", "meta": {}}

- `image`: relative to `source.image_root` (default: the file's folder); an absolute path or one with `../` is read
  when it resolves inside that folder, never outside it.
- `answers`: VQAv2's ten human answers (strings, or `{"answer", "answer_confidence", "answer_id"}` objects) kept with
  their repeats: the most frequent is the answer, the others (repeats included) the aliases, so the soft VQA score
  counts agreeing humans right. Numbers are read as their text.
- `solution`: R1-V / CLS-RL / DeFacto-v1 style; the `<answer>` block is the answer and `<bbox>` lists the evidence.
- `problem` is read as `question` when there is no `question` (R1-V's field name).
- `boxes` / `distractors` in pixels, `[x1, y1, x2, y2]`, or `[x, y, w, h]` with `source.box_format=xywh`.

Records are decoded one by one, so a line that is not UTF-8 or not JSON is rejected alone. The id is `id`, else
`question_id`, else `<file stem>-<line number>` (`<file stem>-<index>` in a JSON list).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from data_builders.adapters.common import parse_solution, to_xyxy, vqa_answers
from data_builders.config import BuildConfig
from data_builders.records import FileImage, Item, Reject
from mmrl.errors import UserError


def pick_answer(record: dict[str, Any]) -> tuple[str, tuple[str, ...], list[Any] | None]:
    """(answer, aliases, boxes from a solution string) from "answer", "answers" or "solution".

    >>> pick_answer({"answers": ["2"] * 10})[:2]
    ('2', ('2', '2', '2', '2', '2', '2', '2', '2', '2'))
    >>> pick_answer({"answer": 3})
    ('3', (), None)
    """
    if "answer" in record:
        answer = record["answer"]
        if isinstance(answer, bool) or not isinstance(answer, str | int | float):
            raise ValueError("'answer' must be a string or a number")
        extra = record.get("answer_aliases") or []
        if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
            raise ValueError("'answer_aliases' must be a list of strings")
        return str(answer).strip(), tuple(extra), None
    if "answers" in record:
        return (*vqa_answers(record["answers"]), None)
    if isinstance(record.get("solution"), str):
        answer, boxes = parse_solution(record["solution"])
        return answer, (), boxes
    raise ValueError("needs 'answer', 'answers' (a list of human answers) or 'solution'")


def parse_record(record: Any, fallback_id: str, root: str, source: str, box_format: str = "xyxy") -> Item:
    if not isinstance(record, dict):
        raise ValueError(f"a record must be a JSON object, got {type(record).__name__}")
    image = record.get("image")
    if not isinstance(image, str) or not image:
        raise ValueError("'image' (a path relative to the file or to source.image_root) is missing")
    question = record.get("question", record.get("problem", ""))
    if not isinstance(question, str):
        raise ValueError("'question' must be a string")
    answer, aliases, solution_boxes = pick_answer(record)
    choices = record.get("choices")
    if choices is not None and (not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)):
        raise ValueError("'choices' must be a list of strings")
    for key in ("boxes", "distractors"):
        if record.get(key) is not None and not isinstance(record[key], list):
            raise ValueError(f"'{key}' must be a list of boxes")
    meta = record.get("meta") or {}
    if not isinstance(meta, dict):
        raise ValueError("'meta' must be an object")
    boxes = record.get("boxes", solution_boxes)
    item_id = record.get("id", record.get("question_id", fallback_id))
    return Item(
        id=str(item_id),
        source=source,
        image=FileImage(image, root),
        question=question.strip(),
        answer=answer,
        aliases=aliases,
        choices=tuple(choices) if choices is not None else None,
        boxes=to_xyxy(boxes, box_format),
        distractors=to_xyxy(record.get("distractors"), box_format),
        task=str(record.get("task", "vqa")),
        meta=dict(meta),
    )


def read_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(fallback id, record or Reject) for each record of a JSON Lines file, or of a `.json` file holding a list."""
    if not path.is_file():
        raise UserError(f"input file not found: {path}")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_bytes().decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"{path} is not a UTF-8 JSON file ({err})") from None
        if isinstance(data, dict):  # {"data": [...]}, {"annotations": [...]}: the one list it holds
            lists = [v for v in data.values() if isinstance(v, list)]
            data = lists[0] if len(lists) == 1 else data
        if not isinstance(data, list):
            raise UserError(f"{path} must hold a JSON list of records")
        for index, record in enumerate(data):
            yield f"{path.stem}-{index:06d}", record
        return
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            fallback_id = f"{path.stem}-{lineno:06d}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield fallback_id, Reject(fallback_id, "not_utf8", f"line {lineno} is not valid UTF-8 ({err.reason})")
                continue
            try:
                yield fallback_id, json.loads(text)
            except json.JSONDecodeError as err:
                yield fallback_id, Reject(fallback_id, "bad_record", f"line {lineno} is not JSON ({err.msg})")


def read_json_source(cfg: BuildConfig, parse: Callable[..., Item], default_name: str) -> Iterator[Item | Reject]:
    """The items of a JSON / JSONL source, each record parsed by `parse(record, fallback_id, image_root, source,
    box_format)`; a record it refuses (ValueError, TypeError) becomes a reject with the reason."""
    src = cfg.source
    path = Path(src.path)
    root = src.image_root or str(path.parent)
    source = src.name or default_name
    for fallback_id, record in read_records(path):
        if isinstance(record, Reject):
            yield record
            continue
        try:
            yield parse(record, fallback_id, root, source, src.box_format)
        except (ValueError, TypeError) as err:
            yield Reject(fallback_id, "bad_record", f"{fallback_id}: {err}")


def read(cfg: BuildConfig) -> Iterator[Item | Reject]:
    return read_json_source(cfg, parse_record, Path(cfg.source.path).stem)
