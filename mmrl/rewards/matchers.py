"""Accuracy matchers: `(answer, targets, choices, config) -> score in [0, 1]`, one per recipe kind.

`targets` is the expected answer first, then its aliases (for VQA soft accuracy: the human answers, repeats kept).
Every matcher compares the parsed answer only, whole and normalised: never a substring of the completion, so
"A or B or C" and a list of every class name match nothing. The lenient "label contained" metric is for
evaluation reports only and is not in `MATCHERS`, so no reward can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mmrl.rewards.config import RewardConfig
from mmrl.rewards.parsing import normalize_answer, parse_choice, parse_number

Matcher = Callable[[str, Sequence[str], Sequence[str] | None, RewardConfig], float]
DEFAULT_CONFIG = RewardConfig()


def exact_match(
    answer: str, targets: Sequence[str], choices: Sequence[str] | None = None, config: RewardConfig = DEFAULT_CONFIG
) -> float:
    """1.0 when the normalised answer equals a normalised target (answer or alias), else 0.0.

    >>> exact_match("The Golden_Retriever.", ["golden retriever"]), exact_match("two", ["2"])
    (1.0, 1.0)
    >>> exact_match("cat or dog", ["cat", "dog"]), exact_match("", [""])
    (0.0, 0.0)
    """
    norm = normalize_answer(answer)
    return float(bool(norm) and any(norm == normalize_answer(t) for t in targets))


def _choice_index(text: str, choices: Sequence[str]) -> int | None:
    """Which option `text` names: by letter (its trailing text, if any, must be that option's) or by option text."""
    lettered = parse_choice(text, len(choices))
    if lettered is not None:
        index, rest = lettered
        return index if not rest or exact_match(rest, [choices[index]]) else None
    hits = [i for i, choice in enumerate(choices) if exact_match(text, [choice])]
    return hits[0] if len(hits) == 1 else None


def resolve_choice(answer: str, choices: Sequence[str] | None) -> str:
    """The option text an answer names by letter ("B" -> "dog"); the answer itself when it names none.

    >>> resolve_choice("(B)", ["cat", "dog"]), resolve_choice("a dog", ["cat", "dog"]), resolve_choice("x", None)
    ('dog', 'a dog', 'x')
    """
    if not choices:
        return answer
    lettered = parse_choice(answer, len(choices))
    index = _choice_index(answer, choices) if lettered is not None else None
    return choices[index] if index is not None else answer


def multiple_choice(
    answer: str, targets: Sequence[str], choices: Sequence[str] | None = None, config: RewardConfig = DEFAULT_CONFIG
) -> float:
    """1.0 when the answer names (by letter or by text) the option the target names; exact match without options.

    >>> opts = ["cat", "dog", "bird"]
    >>> multiple_choice("B", ["dog"], opts), multiple_choice("(b) dog", ["B"], opts)
    (1.0, 1.0)
    >>> multiple_choice("Dog.", ["B"], opts)
    1.0
    >>> multiple_choice("B. cat", ["dog"], opts), multiple_choice("A or B", ["dog"], opts)
    (0.0, 0.0)
    """
    if not choices:
        return exact_match(answer, targets)
    predicted = _choice_index(answer, choices)
    return float(predicted is not None and any(_choice_index(t, choices) == predicted for t in targets))


def vqa_soft(
    answer: str, targets: Sequence[str], choices: Sequence[str] | None = None, config: RewardConfig = DEFAULT_CONFIG
) -> float:
    """VQA accuracy: min(number of human answers equal to the answer / 3, 1).

    >>> vqa_soft("2", ["two", "2", "3", "2"]), vqa_soft("3", ["two", "2", "3", "2"]), vqa_soft("4", ["2"])
    (1.0, 0.3333333333333333, 0.0)
    """
    norm = normalize_answer(answer)
    if not norm:
        return 0.0
    return min(sum(norm == normalize_answer(t) for t in targets) / 3.0, 1.0)


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def anls(
    answer: str, targets: Sequence[str], choices: Sequence[str] | None = None, config: RewardConfig = DEFAULT_CONFIG
) -> float:
    """ANLS (DocVQA): best over targets of 1 - normalised edit distance, 0 where that distance reaches the threshold.

    >>> anls("invoice", ["Invoice"]), round(anls("lnvoice", ["invoice"]), 4), anls("total", ["invoice"])
    (1.0, 0.8571, 0.0)
    """
    pred = " ".join(answer.casefold().split())
    best = 0.0
    for target in targets:
        gold = " ".join(target.casefold().split())
        longest = max(len(pred), len(gold))
        if not pred or not gold:
            continue
        # the length difference bounds the distance from below: skip the quadratic work when it already fails
        if abs(len(pred) - len(gold)) / longest >= config.anls_threshold:
            continue
        distance = _levenshtein(pred, gold) / longest
        if distance < config.anls_threshold:
            best = max(best, 1.0 - distance)
    return best


def relaxed_numeric(
    answer: str, targets: Sequence[str], choices: Sequence[str] | None = None, config: RewardConfig = DEFAULT_CONFIG
) -> float:
    """ChartQA's relaxed accuracy: numbers within `numeric_tolerance` (5%) of a numeric target; else exact match.

    >>> relaxed_numeric("10.4", ["10"]), relaxed_numeric("10.6", ["10"]), relaxed_numeric("40%", ["40"])
    (1.0, 0.0, 1.0)
    >>> relaxed_numeric("Yes", ["yes"]), relaxed_numeric("0", ["0"]), relaxed_numeric("3 or 4", ["3"])
    (1.0, 1.0, 0.0)
    """
    value = parse_number(answer)
    for target in targets:
        gold = parse_number(target)
        if gold is None:
            if exact_match(answer, [target]):
                return 1.0
        elif value is not None and abs(value - gold) <= config.numeric_tolerance * abs(gold):
            return 1.0
    return 0.0


def label_match(
    answer: str, targets: Sequence[str], choices: Sequence[str] | None = None, config: RewardConfig = DEFAULT_CONFIG
) -> float:
    """Classification, strict (the training reward): the answer is the label, or names its option by letter.

    >>> label_match("Golden_Retriever", ["golden retriever"]), label_match("retriever", ["golden retriever"])
    (1.0, 0.0)
    >>> label_match("cat, dog, bird", ["cat"], ["cat", "dog", "bird"])
    0.0
    """
    return multiple_choice(answer, targets, choices) if choices else exact_match(answer, targets)


MATCHERS: dict[str, Matcher] = {
    "exact": exact_match,
    "multiple_choice": multiple_choice,
    "vqa_soft": vqa_soft,
    "anls": anls,
    "relaxed_numeric": relaxed_numeric,
    "label": label_match,
}
