"""Optional penalties (0 or negative): overlong completions and repeated text.

Both apply to every completion (never None) and are bounded to [-1, 0], so a weight sets their worst cost.
"""

from __future__ import annotations

from mmrl.boxes import FrameSpec
from mmrl.rewards.config import RewardConfig
from mmrl.rewards.parsing import words
from mmrl.types import Sample

DEFAULT_CONFIG = RewardConfig()
DEFAULT_FRAME = FrameSpec()


def length_penalty(
    completion: str, sample: Sample, *, config: RewardConfig = DEFAULT_CONFIG, frame: FrameSpec = DEFAULT_FRAME
) -> float:
    """0 up to `length_max_chars`; beyond it, -length_penalty per further `length_max_chars`, floored at -1.

    >>> from mmrl.types import Variant
    >>> s = Sample("1", "g", Variant.POSITIVE, "a.png", (64, 64), "?", "red")
    >>> cfg = RewardConfig(length_max_chars=10)
    >>> [length_penalty("x" * n, s, config=cfg) for n in (10, 15, 99)]
    [0.0, -0.5, -1.0]
    """
    excess = (len(completion) - config.length_max_chars) / config.length_max_chars
    return -min(config.length_penalty * excess, 1.0) if excess > 0 else 0.0


def repetition_penalty(
    completion: str, sample: Sample, *, config: RewardConfig = DEFAULT_CONFIG, frame: FrameSpec = DEFAULT_FRAME
) -> float:
    """0 while at most `repetition_threshold` of the word n-grams are repeats; then falling linearly to -1.

    >>> from mmrl.types import Variant
    >>> s = Sample("1", "g", Variant.POSITIVE, "a.png", (64, 64), "?", "red")
    >>> cfg = RewardConfig(repetition_ngram=2, repetition_threshold=0.0)
    >>> repetition_penalty("the red car is red", s, config=cfg), repetition_penalty("a b a b a b", s, config=cfg)
    (0.0, -0.6)
    """
    tokens = words(completion)
    n = config.repetition_ngram
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    repeated = 1.0 - len(set(grams)) / len(grams)
    if repeated <= config.repetition_threshold:
        return 0.0
    return -min((repeated - config.repetition_threshold) / (1.0 - config.repetition_threshold), 1.0)
