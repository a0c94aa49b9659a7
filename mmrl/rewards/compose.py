"""Weighted composition of reward terms over a batch of completions.

The total of a completion is the weighted sum of its terms that apply: a None term (e.g. grounding on a
counterfactual) adds nothing, and the other weights are not renormalised, so a counterfactual's total ranges
over fewer terms than a positive's. Advantages are computed within a group of one sample, where every
completion has the same terms present, so the missing term shifts no comparison GRPO makes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mmrl.boxes import FrameSpec
from mmrl.rewards.config import RewardConfig
from mmrl.rewards.registry import REWARDS
from mmrl.types import Sample

DEFAULT_FRAME = FrameSpec()  # pixels of the stored image


@dataclass
class RewardScores:
    total: list[float]  # (N,) one per completion
    terms: dict[str, list[float | None]]  # name -> (N,), unweighted; None where the term does not apply


def score_completions(
    completions: Sequence[str], samples: Sequence[Sample], config: RewardConfig, frame: FrameSpec = DEFAULT_FRAME
) -> RewardScores:
    """Score completion i against samples[i] with every term `config.terms` lists.

    >>> from mmrl.types import Variant
    >>> s = Sample("1", "g", Variant.COUNTERFACTUAL, "a.png", (64, 64), "?", "unknown")
    >>> scores = score_completions(["<think>masked</think><answer>unknown</answer>"], [s], RewardConfig())
    >>> scores.total, scores.terms
    ([1.5], {'answer': [1.0], 'format': [1.0], 'grounding': [None]})
    """
    if len(completions) != len(samples):
        raise ValueError(f"{len(completions)} completions but {len(samples)} samples")
    terms: dict[str, list[float | None]] = {}
    total = [0.0] * len(completions)
    for name, weight in config.terms.items():
        fn = REWARDS[name]
        values = [fn(c, s, config=config, frame=frame) for c, s in zip(completions, samples, strict=True)]
        for i, value in enumerate(values):
            if value is None:
                continue
            if not math.isfinite(value):  # a bug in a term, never the model's fault: fail loudly
                raise ValueError(f"reward term '{name}' returned {value} for completion {i}")
            total[i] += weight * value
        terms[name] = values
    return RewardScores(total=total, terms=terms)
