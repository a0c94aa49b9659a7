"""Answer rewards: variant-aware (`answer`) and the plain 0/1 outcome (`accuracy`, for logging and eval).

Outcomes and their default scores (RewardConfig; DeFacto's second release used +1 / -0.6 / -1.5):

| variant                     | outcome                          | score                              |
|-----------------------------|----------------------------------|------------------------------------|
| positive, random-masked     | matches the answer or an alias   | matcher score (1.0 for exact)      |
|                             | abstains                         | abstain_on_answerable_penalty (-1) |
|                             | anything else                    | matcher score (0.0)                |
| counterfactual              | gives the original answer        | counterfactual_original (-1.5)     |
|                             | abstains (without naming it)     | counterfactual_abstain (+1)        |
|                             | any other guess                  | counterfactual_guess (-0.6)        |
| any                         | no parseable answer              | unparseable_penalty (-1.5)         |

A counterfactual's original answer comes from `sample.meta["original_answer"]` (and optional
`meta["original_aliases"]`); without it a wrong guess and the original answer score the same.
"""

from __future__ import annotations

from mmrl.boxes import FrameSpec
from mmrl.rewards.abstention import is_abstention, without_phrases
from mmrl.rewards.config import RewardConfig
from mmrl.rewards.matchers import MATCHERS, resolve_choice
from mmrl.rewards.parsing import contains_phrase, extract_answer
from mmrl.types import Sample, Variant

DEFAULT_CONFIG = RewardConfig()
DEFAULT_FRAME = FrameSpec()


def _phrases(sample: Sample, config: RewardConfig) -> list[str]:
    # the configured abstention answer always counts, as does a counterfactual's expected answer
    extra = [config.abstention_answer] + ([sample.answer] if sample.variant == Variant.COUNTERFACTUAL else [])
    return list(config.abstention_phrases) + extra


def _original_targets(sample: Sample) -> list[str]:
    original = sample.meta.get("original_answer")
    aliases = sample.meta.get("original_aliases") or []
    if not isinstance(original, str) or not original.strip():
        return []
    return [original, *(a for a in aliases if isinstance(a, str) and a.strip())]


def _outcome(answer: str, sample: Sample, config: RewardConfig) -> tuple[str, float]:
    """('correct' | 'wrong' | 'abstain' | 'original' | 'guess', matcher score) for a parsed answer."""
    matcher = MATCHERS[config.matcher]
    text = resolve_choice(answer, sample.choices)  # "E" naming the option "unknown" is an abstention
    if sample.variant == Variant.COUNTERFACTUAL:
        original = _original_targets(sample)
        if original and matcher(answer, original, sample.choices, config) > 0:
            return "original", 0.0
        phrases = _phrases(sample, config)
        if not is_abstention(text, phrases):
            return "guess", 0.0
        # "red or unknown" hedges: an abstention that also names the original answer is the original answer
        rest = without_phrases(text, phrases)
        return ("original", 0.0) if any(contains_phrase(rest, t) for t in original) else ("abstain", 0.0)
    score = matcher(answer, [sample.answer, *sample.answer_aliases], sample.choices, config)
    if score > 0:
        return "correct", score  # the label wins: "Unknown Pleasures" is an answer when it is the label
    return ("abstain", 0.0) if is_abstention(text, _phrases(sample, config)) else ("wrong", 0.0)


def answer_reward(
    completion: str, sample: Sample, *, config: RewardConfig = DEFAULT_CONFIG, frame: FrameSpec = DEFAULT_FRAME
) -> float:
    """Variant-aware answer reward (table in the module docstring).

    >>> from mmrl.types import Variant
    >>> pos = Sample("1", "g", Variant.POSITIVE, "a.png", (64, 64), "Color?", "red")
    >>> cf = Sample("2", "g", Variant.COUNTERFACTUAL, "b.png", (64, 64), "Color?", "unknown",
    ...             meta={"original_answer": "red"})
    >>> [answer_reward(f"<think>it is not blue</think><answer>{a}</answer>", pos) for a in ("Red", "blue", "unknown")]
    [1.0, 0.0, -1.0]
    >>> [answer_reward(f"<answer>{a}</answer>", cf) for a in ("I cannot determine", "blue", "red")]
    [1.0, -0.6, -1.5]
    >>> answer_reward("<answer></answer>", pos)
    -1.5
    """
    answer = extract_answer(completion, config.template)
    if answer is None:
        return config.unparseable_penalty
    outcome, score = _outcome(answer, sample, config)
    return {
        "correct": score,
        "wrong": score,
        "abstain": config.abstain_on_answerable_penalty
        if sample.variant != Variant.COUNTERFACTUAL
        else config.counterfactual_abstain_reward,
        "original": config.counterfactual_original_reward,
        "guess": config.counterfactual_guess_reward,
    }[outcome]


def accuracy_reward(
    completion: str, sample: Sample, *, config: RewardConfig = DEFAULT_CONFIG, frame: FrameSpec = DEFAULT_FRAME
) -> float:
    """The outcome as a 0-1 score: the matcher's score on answerable variants, 1.0 for abstaining on a counterfactual.

    >>> pos = Sample("1", "g", Variant.POSITIVE, "a.png", (64, 64), "Color?", "red")
    >>> accuracy_reward("<answer>red</answer>", pos), accuracy_reward("<answer>unknown</answer>", pos)
    (1.0, 0.0)
    """
    answer = extract_answer(completion, config.template)
    if answer is None:
        return 0.0
    outcome, score = _outcome(answer, sample, config)
    return 1.0 if outcome == "abstain" and sample.variant == Variant.COUNTERFACTUAL else score
