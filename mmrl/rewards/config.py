"""The `rewards:` section of the training config: which terms, their weights, and every knob the terms read.

Plain types only, so `mmrl.config.loader.load_config` can build and validate it from YAML and `key=value` overrides.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Literal

Matcher = Literal["exact", "multiple_choice", "vqa_soft", "anls", "relaxed_numeric", "label"]


def _default_phrases() -> list[str]:
    return [
        "unknown",
        "i don't know",
        "i do not know",
        "cannot determine",
        "can't determine",
        "cannot be determined",
        "can not be determined",
        "cannot tell",
        "can't tell",
        "cannot answer",
        "not enough information",
        "insufficient information",
        "not visible",
        "not determinable",
        "unanswerable",
        "unclear",
        "no answer",
    ]


# the names `mmrl.rewards.registry.REWARDS` maps to functions (kept here as strings, so the config validates names
# without importing the reward functions; a test checks the two agree)
REWARD_NAMES = (
    "answer", "accuracy", "format", "think_format", "box_format", "direct_format", "grounding", "length", "repetition",
)  # fmt: skip


@dataclass
class RewardConfig:
    # name -> weight; names are keys of mmrl.rewards.REWARDS. The total is the weighted sum of the terms that
    # apply to a completion (a None term adds nothing; the weights are not renormalised).
    terms: dict[str, float] = field(default_factory=lambda: {"answer": 1.0, "format": 0.5, "grounding": 0.5})
    matcher: Matcher = "exact"
    # "think": <think>..</think><answer>..</answer>; "direct": the whole completion is the answer (No-Thinking)
    template: Literal["think", "direct"] = "think"

    # --- answers and abstention (DeFacto's second release: +1 / -0.6 / -1.5) ---
    abstention_answer: str = "unknown"
    abstention_phrases: list[str] = field(default_factory=_default_phrases)
    counterfactual_abstain_reward: float = 1.0
    counterfactual_guess_reward: float = -0.6
    counterfactual_original_reward: float = -1.5
    # abstaining on an answerable image (positive, random-masked) scores this instead of the 0 of a wrong answer:
    # without it a policy collapses to "unknown" (DESIGN.md, learning probes). At -1, "unknown" on all three
    # variants averages (-1 - 1 + 1) / 3 = -0.33, below always guessing wrong (0 + 0 - 0.6) / 3 = -0.2.
    abstain_on_answerable_penalty: float = -1.0
    # no parseable answer, on any variant: no better than the worst answer, so silence is never a way out
    # (DESIGN.md: a policy learned unparseable output on counterfactuals when that beat a wrong guess)
    unparseable_penalty: float = -1.5
    # relaxed numeric tolerance (ChartQA: 5%) and the ANLS threshold
    numeric_tolerance: float = 0.05
    anls_threshold: float = 0.5

    # --- format ---
    # the direct (No-Thinking) answer counts as well-formed only up to this many characters
    direct_max_chars: int = 64

    # --- grounding ---
    grounding_mode: Literal["f1", "mean_iou", "giou", "iou2"] = "f1"
    iou_threshold: float = 0.5
    grounding_matching: Literal["hungarian", "greedy"] = "hungarian"
    # subtracted per predicted box whose IoU with a distractor region reaches iou_threshold (scaled by count)
    distractor_penalty: float = 0.5
    # on counterfactuals grounding is None unless this is set: then naming no box scores it, naming any scores 0
    counterfactual_no_box_reward: float | None = None
    # predicted boxes beyond this count make grounding and box format score 0 (a spray of boxes is a hack)
    max_boxes: int = 20

    # --- optional penalties ---
    # completions longer than this many characters lose length_penalty per extra length_max_chars (capped at 1)
    length_max_chars: int = 2000
    length_penalty: float = 1.0
    # fraction of repeated word n-grams above which the repetition term falls linearly to -1
    repetition_ngram: int = 4
    repetition_threshold: float = 0.2

    def validate(self) -> None:
        for name, weight in self.terms.items():
            if name not in REWARD_NAMES:
                near = difflib.get_close_matches(name, REWARD_NAMES, n=1)
                hint = f"; did you mean '{near[0]}'?" if near else f"; valid: {', '.join(REWARD_NAMES)}"
                raise ValueError(f"rewards.terms: unknown reward '{name}'{hint}")
            if not math.isfinite(weight):
                raise ValueError(f"rewards.terms.{name}: weight must be finite, got {weight}")
        if not self.terms:
            raise ValueError("rewards.terms must name at least one reward")
        boxed = sorted({"grounding", "box_format", "think_format"} & set(self.terms))
        if self.template == "direct" and boxed:
            # a direct answer holds no tags, so these would be a constant 0 (or None): a silent misconfiguration
            raise ValueError(f"rewards.template is 'direct' (no tags, no boxes): remove {', '.join(boxed)} from terms")
        if not self.abstention_answer.strip():
            raise ValueError("rewards.abstention_answer must not be empty")
        if any(not p.strip() for p in self.abstention_phrases):
            raise ValueError("rewards.abstention_phrases must not contain empty phrases")
        for name in ("iou_threshold", "numeric_tolerance", "anls_threshold", "repetition_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"rewards.{name} must be in [0, 1], got {value}")
        if self.iou_threshold == 0.0:
            raise ValueError("rewards.iou_threshold must be > 0 (every box would match)")
        for name in ("direct_max_chars", "length_max_chars", "repetition_ngram", "max_boxes"):
            if getattr(self, name) < 1:
                raise ValueError(f"rewards.{name} must be >= 1, got {getattr(self, name)}")
        if self.counterfactual_original_reward > self.counterfactual_guess_reward:
            raise ValueError("rewards.counterfactual_original_reward must not exceed counterfactual_guess_reward")
        if self.counterfactual_abstain_reward <= self.counterfactual_guess_reward:
            raise ValueError("rewards.counterfactual_abstain_reward must exceed counterfactual_guess_reward")
        if self.abstain_on_answerable_penalty > 0:
            raise ValueError("rewards.abstain_on_answerable_penalty must be <= 0")
        worst = min(self.counterfactual_original_reward, self.abstain_on_answerable_penalty, 0.0)
        if self.unparseable_penalty > worst:
            raise ValueError(
                f"rewards.unparseable_penalty ({self.unparseable_penalty}) must not exceed the worst answer score "
                f"({worst}): otherwise emitting no answer is a way out"
            )
