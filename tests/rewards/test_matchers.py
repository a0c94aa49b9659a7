"""Accuracy matchers and abstention, checked against hand-worked answers and reference implementations."""

import random

import pytest

from mmrl.rewards.abstention import is_abstention
from mmrl.rewards.config import RewardConfig
from mmrl.rewards.matchers import (
    MATCHERS,
    anls,
    exact_match,
    label_match,
    multiple_choice,
    relaxed_numeric,
    resolve_choice,
    vqa_soft,
)


@pytest.mark.parametrize(
    ("answer", "targets", "expected"),
    [
        ("Red.", ["red"], 1.0),
        ("the red", ["red"], 1.0),
        ("Crimson", ["red", "crimson"], 1.0),  # alias
        ("Golden_Retriever", ["golden retriever"], 1.0),
        ("three", ["3"], 1.0),
        ("red car", ["red"], 0.0),  # more than the answer is not the answer
        ("red or blue", ["red"], 0.0),
        ("", ["red"], 0.0),
        ("...", ["!!"], 0.0),  # both normalise to nothing: no match on emptiness
    ],
)
def test_exact_match(answer, targets, expected):
    assert exact_match(answer, targets) == expected


OPTIONS = ["blue", "red", "green", "unknown"]


@pytest.mark.parametrize(
    ("answer", "target", "expected"),
    [
        ("B", "B", 1.0),
        ("(b)", "B", 1.0),
        ("B. red", "B", 1.0),
        ("red", "B", 1.0),
        ("B", "red", 1.0),  # the target given as option text
        ("B. blue", "B", 0.0),  # letter and text disagree: neither counts
        ("A or B", "B", 0.0),
        ("A, B, C, D", "B", 0.0),
        ("C", "B", 0.0),
        ("F", "B", 0.0),
        ("B red", "B", 1.0),
        ("B blue", "B", 0.0),  # letter and text disagree
        ("**B**", "B", 1.0),
        ("[B]", "B", 1.0),
        ("B,", "B", 1.0),
        ("Final answer: B", "B", 1.0),
        ("The correct answer is B", "B", 1.0),
        ("B is correct", "B", 1.0),
        ("B\nThe car is red, not blue as in A.", "B", 1.0),
        ("A\nB", "B", 0.0),
        ("B, C", "B", 0.0),
    ],
)
def test_multiple_choice(answer, target, expected):
    assert multiple_choice(answer, [target], OPTIONS) == expected


def test_resolve_choice_maps_letters_to_text():
    assert resolve_choice("D", OPTIONS) == "unknown"
    assert resolve_choice("(D) unknown", OPTIONS) == "unknown"
    assert resolve_choice("D. red", OPTIONS) == "D. red"  # contradictory: left as written
    assert resolve_choice("D", None) == "D"


def test_vqa_soft_reads_the_human_answers_after_the_answer():
    humans = ["2", "2", "two", "3", "2 dogs", "2", "3", "4", "2", "2"]  # six say 2, two say 3, one "2 dogs"
    targets = ["2", *humans]
    assert vqa_soft("2", targets) == 1.0
    assert vqa_soft("3", targets) == pytest.approx(0.6)  # k = 2: (2 * 1/3 + 8 * 2/3) / 10
    assert vqa_soft("4", targets) == pytest.approx(0.3)
    assert vqa_soft("5", targets) == 0.0
    assert vqa_soft("", [""]) == 0.0


def _generated_strings(rng, count):
    alphabet = ["a", "b", "c", "I", "n", "v", "o", " ", "  ", "1", "0", "é", "É", "-"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(count)]


def test_anls_equals_the_anls_package_on_generated_cases():
    from anls import anls_score  # the RRC InfographicVQA script, packaged (test extra)

    rng = random.Random(16)
    preds, golds = _generated_strings(rng, 400), _generated_strings(rng, 1200)
    for i, pred in enumerate(preds):
        targets = golds[3 * i : 3 * i + 3]
        if not pred.strip() or not all(t.strip() for t in targets):
            continue  # empty answers: mmrl scores 0, the script 1 against an empty target (docstring)
        for threshold in (0.5, 0.3):
            config = RewardConfig(anls_threshold=threshold)
            assert anls(pred, targets, config=config) == pytest.approx(anls_score(pred, targets, threshold), abs=1e-12)


def test_anls():
    # "invoce" vs "invoice": distance 1 over 7 characters -> 1 - 1/7
    assert anls("invoce", ["Invoice"]) == pytest.approx(6 / 7)
    assert anls("INVOICE ", ["invoice"]) == 1.0
    assert anls("inv", ["invoice"]) == 0.0  # distance 4/7 >= 0.5
    assert anls("abcd", ["abef"]) == 0.0  # distance exactly 0.5: 0 (NL < 0.5 is required)
    assert anls("invoice", ["bill", "invoices"]) == pytest.approx(7 / 8)  # best target
    assert anls("STRASSE", ["straße"]) == pytest.approx(5 / 7)  # lower(), not casefold(): 2 edits over 7
    assert anls("x" * 100_000, ["invoice"]) == 0.0
    assert anls("", ["invoice"]) == 0.0


@pytest.mark.parametrize(
    ("answer", "target", "expected"),
    [
        ("105", "100", 1.0),  # exactly 5% of the target
        ("105.1", "100", 0.0),
        ("95.2", "100", 1.0),
        ("-95", "-100", 1.0),
        ("0.05", "5%", 1.0),  # a percent target reads as 5 or 0.05
        ("5", "5%", 1.0),
        ("0.06", "5%", 0.0),  # 0.06 is 20% off 0.05 and far from 5
        ("5%", "0.05", 1.0),  # the same on the answer's side
        ("12%", "12", 1.0),
        ("1,200", "1200", 1.0),  # thousands separators
        ("1200", "1,234", 1.0),  # 2.8% off
        ("$3.5", "3.5", 1.0),
        ("twelve", "12", 1.0),
        ("0.0", "0", 1.0),  # a zero target needs exactly zero
        ("0.01", "0", 0.0),
        ("1e400", "1e300", 0.0),
        ("Brazil", "brazil", 1.0),  # text: case-insensitive equality
        (" Brazil ", "brazil", 1.0),
        ("Brazil.", "brazil", 0.0),  # ... and nothing more lenient, as in the ChartQA code
        ("100", "Brazil", 0.0),
        ("3 or 4", "3", 0.0),
    ],
)
def test_relaxed_numeric(answer, target, expected):
    assert relaxed_numeric(answer, [target]) == expected


def test_relaxed_numeric_tolerance_from_config():
    assert relaxed_numeric("tight", ["1"], config=RewardConfig(numeric_tolerance=0.0)) == 0.0
    assert relaxed_numeric("1.01", ["1"], config=RewardConfig(numeric_tolerance=0.0)) == 0.0
    assert relaxed_numeric("1.01", ["1"], config=RewardConfig(numeric_tolerance=0.02)) == 1.0


def test_label_strict_and_contained():
    assert label_match("Golden Retriever", ["golden retriever"]) == 1.0
    assert label_match("a golden retriever dog", ["golden retriever"]) == 0.0
    assert label_match("golden retriever, tabby cat", ["golden retriever"]) == 0.0
    assert "contained" not in " ".join(MATCHERS)  # the lenient metric is never a reward


@pytest.mark.parametrize(
    "answer",
    [
        "unknown",
        "Unknown.",
        "It is unknown",
        "cannot determine",
        "I cannot determine the color",
        "I don't know",
        "Not enough information.",
        "unanswerable",
        "The color cannot be determined",
    ],
)
def test_abstentions(answer):
    assert is_abstention(answer)


@pytest.mark.parametrize(
    "answer",
    [
        "not red",
        "I know it is red",
        "no",
        "none of the above",
        "piano",
        "knowledge",
        "unknowns",
        "nothing",
        "",
        None,
        "It is not unusual",
    ],
)
def test_not_abstentions(answer):
    assert not is_abstention(answer)


def test_abstention_label_and_custom_phrases():
    assert is_abstention("Unknown Pleasures")  # alone, the phrase "unknown" is in it
    assert not is_abstention("Unknown Pleasures", label="Unknown Pleasures")
    assert is_abstention("no idea", phrases=["no idea"]) and not is_abstention("unknown", phrases=["no idea"])
