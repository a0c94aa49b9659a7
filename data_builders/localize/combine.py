"""DeFacto's scheme: region proposals from one localizer (OCR lines, salient blobs, annotations), relevance from
another (typically a VLM). A proposal is evidence when at least `select_overlap` of its area lies inside the
relevant boxes (or it covers that much of one); the other proposals are distractors."""

from __future__ import annotations

from data_builders.config import LocalizeConfig
from data_builders.localize.base import Localized, Localizer, Result, Target
from data_builders.records import ItemError
from mmrl.types import Box


def select(proposals: list[Box], relevant: list[Box], overlap: float) -> tuple[list[Box], list[Box]]:
    """(evidence, distractors).

    >>> select([Box(0.0, 0.0, 10.0, 10.0), Box(20.0, 0.0, 30.0, 10.0)], [Box(0.0, 0.0, 12.0, 12.0)], 0.5)
    ([Box(x1=0.0, y1=0.0, x2=10.0, y2=10.0)], [Box(x1=20.0, y1=0.0, x2=30.0, y2=10.0)])
    """
    evidence, distractors = [], []
    for p in proposals:
        hit = any(p.intersection(r) >= overlap * min(p.area, r.area) for r in relevant)
        (evidence if hit else distractors).append(p)
    return evidence, distractors


class CombinedLocalizer:
    def __init__(self, proposer: Localizer, judge: Localizer, cfg: LocalizeConfig) -> None:
        self.proposer, self.judge, self.cfg = proposer, judge, cfg

    def localize(self, targets: list[Target]) -> list[Result]:
        proposed = self.proposer.localize(targets)
        judged = self.judge.localize(targets)
        results: list[Result] = []
        for p, j in zip(proposed, judged, strict=True):
            if isinstance(p, ItemError):
                results.append(p)
                continue
            if isinstance(j, ItemError):
                results.append(j)
                continue
            evidence, distractors = select(p.evidence + p.distractors, j.evidence, self.cfg.select_overlap)
            if not evidence:
                results.append(ItemError("no_evidence_found", "combine: no proposal lies in the relevant regions"))
                continue
            meta = {**p.meta, **j.meta, "localizer": f"{self.cfg.proposals}+{self.cfg.relevance}"}
            results.append(Localized(evidence, distractors, meta))
        return results
