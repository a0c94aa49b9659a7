"""Evidence from text: RapidOCR (PP-OCR ONNX models, shipped with the package) finds text lines; lines matching
the answer are the evidence, the other lines distractors. For TextVQA / DocVQA-like data.

Matching is on normalised text (NFKC, lower case, punctuation to spaces) and fuzzy (difflib's ratio): a line is
evidence when it reads like the answer or an alias, contains it, or every word of it is a word of the answer (a
multi-line answer). With no such line and `match_question`, lines that read like a content word of the question
are the evidence instead (meta.ocr_match = "question"); with neither the item is rejected.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from typing import Any

import numpy as np

from data_builders.config import LocalizeConfig
from data_builders.localize.base import Localized, Result, Target
from data_builders.records import ItemError
from mmrl.boxes import clip_box
from mmrl.types import Box

STOPWORDS = {"what", "which", "where", "when", "does", "this", "that", "there", "with", "from", "have", "the", "image"}
_ENGINES: dict[str, Any] = {}


def normalise(text: str) -> str:
    """Lower case, NFKC, punctuation to spaces, spaces collapsed.

    >>> normalise("  Hello,  WORLD! ")
    'hello world'
    """
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def similar(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def matches_answer(line: str, answers: list[str], threshold: float) -> bool:
    """Whether a normalised text line is (part of) one of the normalised answers.

    >>> matches_answer("st0p", ["stop"], 0.7), matches_answer("grand cafe", ["cafe"], 0.8)
    (True, True)
    """
    words = line.split()
    for answer in answers:
        if not answer or not line:
            continue
        if similar(line, answer) >= threshold:
            return True
        if len(answer) >= 2 and re.search(rf"\b{re.escape(answer)}\b", line):
            return True
        answer_words = answer.split()
        if len(answer_words) > 1 and all(any(similar(w, a) >= threshold for a in answer_words) for w in words):
            return True
    return False


def engine() -> Any:
    # one engine per process: loading the models takes about half a second
    if "rapid" not in _ENGINES:
        from rapidocr_onnxruntime import RapidOCR

        _ENGINES["rapid"] = RapidOCR()
    return _ENGINES["rapid"]


def read_lines(pixels: np.ndarray, min_score: float) -> list[tuple[Box, str]]:
    """(box, text) of each text line the engine reads with at least `min_score` confidence."""
    result, _ = engine()(np.ascontiguousarray(pixels[:, :, ::-1]))  # the engine expects BGR
    size = (pixels.shape[1], pixels.shape[0])
    lines = []
    for quad, text, score in result or []:
        if float(score) < min_score:
            continue
        xs, ys = [p[0] for p in quad], [p[1] for p in quad]
        box = clip_box(Box(min(xs), min(ys), max(xs) + 1e-3, max(ys) + 1e-3), size)
        if box is not None:
            lines.append((box, str(text)))
    return lines


class OcrLocalizer:
    def __init__(self, cfg: LocalizeConfig, propose_all: bool = False) -> None:
        self.cfg = cfg
        self.propose_all = propose_all  # as combine's proposal source: every line, the judge decides relevance

    def localize(self, targets: list[Target]) -> list[Result]:
        return [self._one(t) for t in targets]

    def _one(self, target: Target) -> Result:
        lines = read_lines(target.pixels, self.cfg.min_text_score)
        if not lines:
            return ItemError("no_evidence_found", "ocr: no text found in the image")
        if self.propose_all:
            return Localized([b for b, _ in lines], [], {"localizer": "ocr", "ocr_text": [t for _, t in lines]})
        item = target.item
        answers = [normalise(a) for a in (item.answer, *item.aliases)]
        texts = [normalise(t) for _, t in lines]
        hits = [matches_answer(t, answers, self.cfg.match_threshold) for t in texts]
        how = "answer"
        if not any(hits) and self.cfg.match_question:
            words = [w for w in normalise(item.question).split() if len(w) >= 4 and w not in STOPWORDS]
            hits = [any(similar(w, q) >= self.cfg.match_threshold for w in t.split() for q in words) for t in texts]
            how = "question"
        if not any(hits):
            seen = "; ".join(t for _, t in lines[:5])
            return ItemError(
                "no_evidence_found", f"ocr: no text line matches the answer {item.answer!r} (read: {seen})"
            )
        evidence = [b for (b, _), h in zip(lines, hits, strict=True) if h]
        distractors = [b for (b, _), h in zip(lines, hits, strict=True) if not h]
        meta = {
            "localizer": "ocr",
            "ocr_match": how,
            "ocr_text": [t for (_, t), h in zip(lines, hits, strict=True) if h],
        }
        return Localized(evidence, distractors, meta)
