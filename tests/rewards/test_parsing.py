"""Parsing: the answer/think blocks, boxes in every notation models emit, normalisation, numbers, choice letters."""

import pytest

from mmrl.rewards.parsing import (
    extract_answer,
    format_boxes,
    is_think_answer,
    normalize_answer,
    parse_answer,
    parse_box_candidates,
    parse_boxes,
    parse_choice,
    parse_direct,
    parse_number,
)
from mmrl.types import Box


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>x</think><answer>red</answer>", "red"),
        ("<ANSWER>\n  red car \n</Answer>", "red car"),
        ("<answer>red</answer><answer>blue</answer>", None),  # several blocks: a format failure, none counts
        ("<answer>red</answer> and <answer>red</answer>", None),  # even when they agree
        ("<answer><answer>red</answer></answer>", None),  # nested
        ("<answer>red", None),  # unclosed
        ("red</answer>", None),
        ("</answer>red<answer>", None),  # reversed
        ("<answer>   </answer>", None),  # empty is no answer
        ("the answer is red", None),
        ("", None),
    ],
)
def test_parse_answer(text, expected):
    assert parse_answer(text) == expected


def test_parse_think_and_structure():
    assert is_think_answer("\n<think>the hood is red</think>\n\n<answer>red</answer>\n")
    for bad in [
        "<answer>red</answer><think>x</think>",  # wrong order
        "intro <think>x</think><answer>red</answer>",  # text outside the blocks
        "<think>x</think>then<answer>red</answer>",
        "<think></think><answer>red</answer>",  # empty reasoning
        "<think>x</think><answer>a</answer><answer>b</answer>",
        "<think>x<think>y</think><answer>red</answer>",
    ]:
        assert not is_think_answer(bad), bad


def test_direct_answer():
    assert parse_direct("  Golden retriever.\n") == "Golden retriever."
    assert parse_direct("") is None and parse_direct("   \n") is None
    assert parse_direct("<answer>cat</answer>") is None
    assert parse_direct("cat <|im_end|>") is None
    assert parse_direct("3 < 5 and 7 > 2") == "3 < 5 and 7 > 2"  # comparison signs are not tags
    assert extract_answer("<think>x</think><answer>cat</answer>", "think") == "cat"
    assert extract_answer("cat", "direct") == "cat"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<box>[[10, 20, 30, 40]]</box>", [[10, 20, 30, 40]]),
        ("<box>[10, 20, 30, 40]</box>", [[10, 20, 30, 40]]),
        ("<box>[[1,2,3,4],[5.5,6,7,8e1]]</box>", [[1, 2, 3, 4], [5.5, 6, 7, 80]]),
        ("<bbox>[10, 20, 30, 40]</bbox>", [[10, 20, 30, 40]]),
        ("<box>(10,20),(30,40)</box>", [[10, 20, 30, 40]]),
        ("<|box_start|>(10,20),(30,40)<|box_end|>", [[10, 20, 30, 40]]),
        ('```json\n[{"bbox_2d": [10, 20, 30, 40], "label": "car"}]\n```', [[10, 20, 30, 40]]),
        ("<box>10, 20, 30, 40</box>", [[10, 20, 30, 40]]),
        ("<box>[[10, 20, 30]]</box>", [[10, 20, 30]]),  # a candidate, but not a box
        ("<box>(10,20),(30,40),(50,60)</box>", [[10, 20, 30, 40], [50, 60]]),
        ("<box>[]</box>", [[]]),  # a box tag with nothing in it is a broken box
        ("<box>[[10, 20, 30, 40]]", []),  # unclosed
        ("<box>[1,2,3,4]</bbox>", []),  # mismatched tags
        ("[10, 20, 30, 40]", []),  # a bare list is not a box
        ("<box><box>[1,2,3,4]</box></box>", [[1, 2, 3, 4]]),
    ],
)
def test_box_candidates(text, expected):
    assert parse_box_candidates(text) == [[float(v) for v in c] for c in expected]


def test_parse_boxes_keeps_well_formed_only():
    text = "<box>[[1,2,3,4],[3,2,1,4],[1,2,3],[0,0,1e999,5],[0,0,nan,5]]</box>"
    assert parse_boxes(text) == [Box(1, 2, 3, 4)]


def test_format_boxes_round_trip():
    boxes = [Box(10, 20, 110, 220), Box(0, 5, 64, 33)]
    text = format_boxes(boxes)
    assert text == "<box>[[10,20,110,220],[0,5,64,33]]</box>"
    assert parse_boxes(text) == boxes
    assert parse_boxes(format_boxes([[0.25, 1.5, 2.75, 4]], decimals=2)) == [Box(0.25, 1.5, 2.75, 4)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Red Car.", "red car"),
        ("golden_retriever", "golden retriever"),
        ("  Two   dogs ", "2 dogs"),
        ("twenty", "20"),
        ("don't know", "dont know"),
        ("3.5 m", "3.5 m"),
        ("1,000", "1000"),
        ("1, 2", "1 2"),
        ("ＲＥＤ", "red"),  # full-width unicode
        ("An", "an"),  # only an article: kept
        ("!!!", ""),
        ("one-way", "1 way"),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42.0),
        ("-3.5", -3.5),
        ("$1,234.5", 1234.5),
        ("12%", 12.0),
        ("seven", 7.0),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("3 or 4", None),
        ("12 apples", None),
        ("inf", None),
        ("1e400", None),
        ("", None),
    ],
)
def test_parse_number(text, expected):
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", (1, "")),
        ("(c)", (2, "")),
        ("D. unknown", (3, "unknown")),
        ("A) blue", (0, "blue")),
        ("The answer is (B)", (1, "")),
        ("Option C", (2, "")),
        ("E", None),  # out of range for four options
        ("A or B", None),
        ("a dog", None),  # an article, not option A
        ("", None),
        ("B dog", (1, "dog")),
        ("**B**", (1, "")),
        ("[B]", (1, "")),
        ("B,", (1, "")),
        ("Final answer: B", (1, "")),
        ("The correct answer is B", (1, "")),
        ("B is correct.", (1, "")),
        ("B\nThe dog is brown, unlike in A.", (1, "")),  # a letter on its own line, then an explanation
        ("The dog is brown.\nFinal answer: C", (2, "")),  # reasoning, then the stated answer
        ("A\nB", None),  # two lone letters: ambiguous
        ("B, C", None),
        ("A/B", None),
        ("Either A or B", None),
        ("B or C is correct", None),
        ("The dog is brown.\nB", None),  # a last line without "answer" is not read
    ],
)
def test_parse_choice(text, expected):
    assert parse_choice(text, 4) == expected
