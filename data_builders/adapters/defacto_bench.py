"""The DeFacto-1.5K benchmark: one JSON file (a list of records, or JSON Lines) in the chat layout DeFacto's
evaluation reads.

    {"conversations": [
        {"from": "human", "value": "<image>QUESTION"},
        {"from": "gpt", "value": "<bbox>[[x1,y1,x2,y2], ...]</bbox><think>...</think><answer>A</answer>"}],
     "images": ["path/to/image.jpg"]}

`messages` with `{"role", "content"}` turns is read the same way. The answer is the `<answer>` block, the evidence
the `<bbox>` boxes (pixels of the image); the image path is relative to the file's folder, or to `source.image_root`.
The id is the record's `id` when it has one, else `<file stem>-<index>`. Each record is one manifest item, so
`mmrl eval` reports accuracy, mean IoU and AP50/AP75/mAP against the human boxes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from data_builders.adapters.common import chat_turns, parse_solution, to_xyxy
from data_builders.adapters.jsonl import read_json_source
from data_builders.config import BuildConfig
from data_builders.records import FileImage, Item, Reject


def parse_record(record: Any, fallback_id: str, root: str, source: str, box_format: str) -> Item:
    if not isinstance(record, dict):
        raise ValueError(f"a record must be a JSON object, got {type(record).__name__}")
    turns = record.get("conversations", record.get("messages"))
    question, reply = chat_turns(turns)
    images = record.get("images", record.get("image"))
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or len(images) != 1 or not isinstance(images[0], str) or not images[0]:
        raise ValueError("'images' must hold exactly one image path")
    answer, boxes = parse_solution(reply)
    return Item(
        id=str(record.get("id", fallback_id)),
        source=source,
        image=FileImage(images[0], root),
        question=question,
        answer=answer,
        boxes=to_xyxy(boxes or [], box_format),
        meta={"reply": reply},
    )


def read(cfg: BuildConfig) -> Iterator[Item | Reject]:
    return read_json_source(cfg, parse_record, "defacto_bench")
