"""VLM-R1's referring-expression (REC) data: a JSON list or JSON Lines, one record per expression, in either form:

    {"image": "COCO_train2014_000000581857.jpg", "problem": "the lady with the blue shirt",
     "solution": [x1, y1, x2, y2]}
    {"id": 7, "image": "...", "conversations": [{"from": "human", "value": "<image>the lady with the blue shirt"},
                                               {"from": "gpt", "value": "[x1, y1, x2, y2]"}]}

The box is in pixels of the image (`source.box_format=xywh` for x, y, width, height); `solution` may also be the
box as text or inside `<answer>` tags. Images are relative to `source.image_root` (VLM-R1 keeps them apart from the
JSON, e.g. COCO's train2014/), by default the file's folder. Each item's evidence is the referred box, its task
"grounding" and its answer the box as `[x1, y1, x2, y2]` text (REC has no other answer).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from data_builders.adapters.common import boxes_from_text, chat_turns, parse_solution, to_xyxy
from data_builders.adapters.jsonl import read_json_source
from data_builders.config import BuildConfig
from data_builders.records import FileImage, Item, Reject


def _box(solution: Any) -> list[float]:
    if isinstance(solution, str):
        text = parse_solution(solution)[0] if "<answer>" in solution.lower() else solution
        boxes = boxes_from_text(text)
    else:
        boxes = [solution]
    if len(boxes) != 1 or not isinstance(boxes[0], list) or len(boxes[0]) != 4:
        raise ValueError(f"the solution must be one box [x1, y1, x2, y2], got {solution!r}")
    return boxes[0]


def parse_record(record: Any, fallback_id: str, root: str, source: str, box_format: str) -> Item:
    if not isinstance(record, dict):
        raise ValueError(f"a record must be a JSON object, got {type(record).__name__}")
    if "conversations" in record:
        turns = [{**t, "value": str(t.get("value"))} if isinstance(t, dict) else t for t in record["conversations"]]
        problem, solution = chat_turns(turns)
    else:
        problem, solution = record.get("problem"), record.get("solution")
    image = record.get("image")
    if isinstance(image, list) and len(image) == 1:
        image = image[0]
    if not isinstance(image, str) or not image or not isinstance(problem, str):
        raise ValueError("needs 'image' (one path) and 'problem' (the expression), or 'conversations'")
    (box,) = to_xyxy([_box(solution)], box_format)
    return Item(
        id=str(record.get("id", fallback_id)),
        source=source,
        image=FileImage(image, root),
        question=problem.replace("<image>", "").strip(),
        answer="[" + ", ".join(f"{v:g}" for v in box) + "]" if all(isinstance(v, int | float) for v in box) else "",
        boxes=[box],
        task="grounding",
        meta={"expression": problem.replace("<image>", "").strip()},
    )


def read(cfg: BuildConfig) -> Iterator[Item | Reject]:
    return read_json_source(cfg, parse_record, "vlm_r1")
