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
from mmrl.rewards.vqa import MIN_HUMAN_ANSWERS, vqa_accuracy, vqa_normalize

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
    """The official VQA accuracy (`mmrl.rewards.vqa`): `targets` is [answer, *human answers, repeats kept].

    The human answers are `targets[1:]` (a manifest's `answer_aliases`: VQAv2, VizWiz, TextVQA and OK-VQA give ten);
    `targets[0]`, the consensus answer, is not counted again. With fewer than four human answers (synonym aliases,
    one annotator) there is no panel to average over: 1.0 when the VQA-normalised answer equals any target.

    >>> ten = ["2"] + ["2"] * 7 + ["3"] * 3  # the answer, then ten humans: seven say 2, three say 3
    >>> vqa_soft("Two", ten), vqa_soft("3", ten), vqa_soft("4", ten), vqa_soft("two", ["2", "two"])
    (1.0, 0.9, 0.0, 1.0)
    """
    humans = targets[1:]
    if len(humans) >= MIN_HUMAN_ANSWERS:
        return vqa_accuracy(answer, humans)
    prediction = vqa_normalize(answer)
    return float(bool(prediction) and any(prediction == vqa_normalize(t) for t in targets))


def _levenshtein(a: str, b: str) -> int:
    # a dozen lines of dynamic programming instead of a compiled dependency; tests check it against the anls package
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
    """ANLS as DocVQA / ST-VQA / InfographicVQA score it: best over targets of 1 - NL, 0 where NL >= the threshold.

    NL is the Levenshtein distance over the longer length, after `strip().lower()` and runs of spaces made one
    (the RRC script: "not case sensitive, but space sensitive"). One difference: an empty answer scores 0 even
    against an empty target (the script gives 1); a parsed answer is never empty.

    >>> anls("invoice", ["Invoice"]), round(anls("lnvoice", ["invoice"]), 4), anls("total", ["invoice"])
    (1.0, 0.8571, 0.0)
    """
    pred = " ".join(answer.strip().lower().split())
    best = 0.0
    for target in targets:
        gold = " ".join(target.strip().lower().split())
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


def _numeric_readings(text: str) -> tuple[float, ...]:
    """The values a short numeric answer can mean: "5%" is 5 or 0.05 (charts label either way); () when not a number."""
    value = parse_number(text)
    if value is None:
        return ()
    return (value, value / 100.0) if text.strip().endswith("%") else (value,)


def relaxed_numeric(
    answer: str, targets: Sequence[str], choices: Sequence[str] | None = None, config: RewardConfig = DEFAULT_CONFIG
) -> float:
    """ChartQA's relaxed accuracy: a number within `numeric_tolerance` (5%) of a numeric target, relative to the
    target; a text target needs the same text (case and outer spaces aside), as in the ChartQA / Pix2Struct code.

    Accepted beyond that code: either side written with "%" reads as the number or a hundredth of it ("5%" matches
    5 and 0.05), thousands separators ("1,200"), a leading currency sign ($ € £) and number words up to ninety; a
    target of 0 needs exactly 0 (the code compares the strings there).

    >>> relaxed_numeric("10.4", ["10"]), relaxed_numeric("10.6", ["10"]), relaxed_numeric("0.05", ["5%"])
    (1.0, 0.0, 1.0)
    >>> relaxed_numeric("Yes", ["yes"]), relaxed_numeric("1,200", ["1200"]), relaxed_numeric("3 or 4", ["3"])
    (1.0, 1.0, 0.0)
    """
    values = _numeric_readings(answer)
    for target in targets:
        golds = _numeric_readings(target)
        if not golds:
            if answer.strip() and answer.strip().lower() == target.strip().lower():
                return 1.0
        elif any(abs(v - g) <= config.numeric_tolerance * abs(g) for v in values for g in golds):
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
