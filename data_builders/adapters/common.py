"""What several source formats share: box text, VQA answer lists, R1-style `solution` strings, chat records.

Each helper accepts every form the released datasets use (listed in docs/data.md) and raises `ValueError` with one
line for a person when a value has none of them; the adapters turn that into a rejects-file entry.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from mmrl.rewards.parsing import parse_answer, parse_box_candidates

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_BOX_SEPARATORS = re.compile(r"[\s,;()\[\]]+")
_IMAGE_TAG = re.compile(r"<image>\s*", re.IGNORECASE)
_BOX_BLOCK = re.compile(r"<(bbox|box)>", re.IGNORECASE)


def boxes_from_text(text: str) -> list[list[float]]:
    """Boxes from one line (or one whole file) of text: `x1 y1 x2 y2`, `x1,y1,x2,y2`, `[x1, y1, x2, y2]`, or a
    bracketed list of such boxes; nothing but numbers, brackets and separators is allowed.

    >>> boxes_from_text("10 20 30 40"), boxes_from_text("[1.5, 2, 3, 4]")
    ([[10.0, 20.0, 30.0, 40.0]], [[1.5, 2.0, 3.0, 4.0]])
    >>> boxes_from_text("[[1, 2, 3, 4], [5, 6, 7, 8]]")
    [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]
    """
    numbers = _NUMBER.findall(text)
    if _BOX_SEPARATORS.sub("", _NUMBER.sub("", text)):
        raise ValueError(f"expected numbers x1 y1 x2 y2, got {text.strip()!r}")
    if not numbers or len(numbers) % 4:
        raise ValueError(f"expected groups of four numbers x1 y1 x2 y2, got {text.strip()!r}")
    values = [float(n) for n in numbers]
    return [values[i : i + 4] for i in range(0, len(values), 4)]


def to_xyxy(boxes: Any, box_format: str) -> Any:
    """Convert `[x, y, w, h]` boxes to `[x1, y1, x2, y2]`; anything malformed passes through for `clean_boxes` to
    judge (it rejects the item with the reason)."""
    if box_format != "xywh" or not isinstance(boxes, list):
        return boxes
    out = []
    for b in boxes:
        ok = (
            isinstance(b, list)
            and len(b) == 4
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in b)
        )
        out.append([b[0], b[1], b[0] + b[2], b[1] + b[3]] if ok else b)
    return out


def _answer_text(value: Any) -> str:
    if isinstance(value, dict):  # VQAv2 / HF: {"answer", "answer_confidence", "answer_id"}
        value = value.get("answer")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"an answer must be text or a number, got {value!r}")
    return str(value).strip()


def vqa_answers(answers: Any) -> tuple[str, tuple[str, ...]]:
    """(answer, aliases) from a list of human answers, repeats kept.

    The answer is the most frequent one (ties: the first given); the aliases are every other answer, repeats kept,
    so answer + aliases are the human answers exactly and the soft VQA score min(#agreeing / 3, 1) stays right.

    >>> vqa_answers(["2", "two", "2", {"answer": "2", "answer_confidence": "yes", "answer_id": 4}])
    ('2', ('two', '2', '2'))
    >>> vqa_answers([7, 7])
    ('7', ('7',))
    """
    if not isinstance(answers, list) or not answers:
        raise ValueError("'answers' must be a non-empty list")
    texts = [t for t in (_answer_text(a) for a in answers) if t]
    if not texts:
        return "", ()
    counts = Counter(texts)
    best = max(counts.values())
    answer = next(t for t in texts if counts[t] == best)
    rest = list(texts)
    rest.remove(answer)
    return answer, tuple(rest)


def parse_solution(solution: str) -> tuple[str, list[list[float]] | None]:
    """(answer, boxes) from an R1-V / CLS-RL / VLM-R1 / DeFacto `solution`: the `<answer>` block's text (the whole
    string when it has no answer tag) and the `<bbox>`/`<box>` lists (None when there is no box tag).

    >>> parse_solution("<bbox>[[1,2,3,4]]</bbox><think>look</think><answer> cat </answer>")
    ('cat', [[1.0, 2.0, 3.0, 4.0]])
    >>> parse_solution("<answer>golden retriever</answer>"), parse_solution("12")
    (('golden retriever', None), ('12', None))
    """
    has_answer_tag = "<answer>" in solution.lower()
    answer = parse_answer(solution) if has_answer_tag else solution.strip()
    if answer is None:
        raise ValueError(f"the solution's <answer> block is empty, unclosed or repeated: {solution[:80]!r}")
    boxes = parse_box_candidates(solution) if _BOX_BLOCK.search(solution) else None
    return answer, boxes


def chat_turns(turns: Any) -> tuple[str, str]:
    """(user text without `<image>`, assistant text) from a conversation: ShareGPT `{"from", "value"}` turns
    (human/gpt) or chat `{"role", "content"}` turns (user/assistant; content a string or a list of parts).

    >>> chat_turns([{"from": "human", "value": "<image>\\nWhat?"}, {"from": "gpt", "value": "<answer>x</answer>"}])
    ('What?', '<answer>x</answer>')
    """
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise ValueError("'conversations' must be a list of turns")
    user, assistant = [], []
    for turn in turns:
        role = str(turn.get("from", turn.get("role", ""))).lower()
        content = turn.get("value", turn.get("content", ""))
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("text"))
        if not isinstance(content, str):
            raise ValueError(f"a {role or 'conversation'} turn's text must be a string")
        if role in ("human", "user"):
            user.append(content)
        elif role in ("gpt", "assistant"):
            assistant.append(content)
    if len(user) != 1 or len(assistant) != 1:
        raise ValueError(f"expected one user turn and one assistant turn, got {len(user)} and {len(assistant)}")
    return _IMAGE_TAG.sub("", user[0]).strip(), assistant[0]
