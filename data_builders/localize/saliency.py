"""A weak fallback: OpenCV's spectral-residual saliency (opencv-contrib, no weights). The most salient blobs are
the evidence, whatever the question says, so records carry meta.weak_evidence = true."""

from __future__ import annotations

import cv2
import numpy as np

from data_builders.config import LocalizeConfig
from data_builders.localize.base import Localized, Result, Target
from data_builders.records import ItemError
from mmrl.types import Box


def salient_boxes(pixels: np.ndarray, max_boxes: int, min_area_fraction: float) -> list[Box]:
    saliency = cv2.saliency.StaticSaliencySpectralResidual_create()
    ok, smap = saliency.computeSaliency(cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    if not ok:
        return []
    smap = cv2.normalize(smap, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    _, binary = cv2.threshold(smap, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    # close small gaps so one object gives one blob rather than a speckle of pixels
    side = max(3, int(round(min(pixels.shape[:2]) * 0.03)) | 1)
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, np.ones((side, side), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary)
    min_area = min_area_fraction * pixels.shape[0] * pixels.shape[1]
    blobs = sorted((tuple(int(v) for v in stats[i]) for i in range(1, count)), key=lambda s: -s[4])
    return [Box.from_xywh(list(s[:4])) for s in blobs if s[4] >= min_area][:max_boxes]


class SaliencyLocalizer:
    def __init__(self, cfg: LocalizeConfig) -> None:
        self.cfg = cfg

    def localize(self, targets: list[Target]) -> list[Result]:
        results: list[Result] = []
        for t in targets:
            boxes = salient_boxes(t.pixels, self.cfg.max_boxes, self.cfg.min_area_fraction)
            if boxes:
                results.append(Localized(boxes, [], {"localizer": "saliency", "weak_evidence": True}))
            else:
                results.append(ItemError("no_evidence_found", "saliency: no salient region above the size floor"))
        return results
