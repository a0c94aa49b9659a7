"""VQA accuracy against the official definition (GT-Vision-Lab/VQA vqaEval.py), worked by hand."""

import json
import random

import pytest

from mmrl.data.manifest import read_manifest
from mmrl.rewards.answer import accuracy_reward, answer_reward
from mmrl.rewards.config import RewardConfig
from mmrl.rewards.matchers import vqa_soft
from mmrl.rewards.vqa import vqa_accuracy, vqa_normalize


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The U.S.A.", "usa"),  # periods not before a digit are deleted, not split
        ("3.5", "3.5"),  # a period before a digit stays
        ("5.", "5"),
        ("Mr. Smith", "mr smith"),
        ("Two", "2"),
        ("None", "0"),  # the official map sends "none" to "0"
        ("ten", "10"),
        ("eleven", "eleven"),  # only zero..ten are mapped
        ("an apple", "apple"),
        ("a", ""),  # the article alone normalises to nothing (the script does the same)
        ("1,000", "1000"),  # comma between digits: every mark is deleted
        ("1,000 (approx)", "1000 approx"),  # ... including the parentheses, because of that comma
        ("yes/no", "yes no"),  # a mark touching no space becomes a space
        ("yes / no", "yes no"),  # a mark touching a space is deleted
        ("hello, world", "hello world"),
        ("a,b", "b"),  # "a b": then the article goes
        ("what?", "what"),
        ("t-shirt", "t-shirt"),  # hyphens are not in the official list
        ("yes!", "yes!"),  # nor exclamation marks
        ("dont", "don’t"),  # contraction table (curly apostrophe, as in the official table)
        ("don't", "don t"),  # the straight apostrophe touches no space: it becomes a space
        ("isnt it", "isn’t it"),
        ("Hello\tWorld\n", "hello world"),
        ("  Red  Car ", "red car"),
    ],
)
def test_official_normalisation(text, expected):
    assert vqa_normalize(text) == expected


@pytest.mark.parametrize(
    ("k", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (5, 1.0), (9, 1.0), (10, 1.0)]
)
def test_ten_answers_by_hand(k, expected):
    # k of ten say "cat": each of the k subsets without a "cat" has k - 1 matches, the other 10 - k have k.
    # k = 3: (3 * min(1, 2/3) + 7 * min(1, 3/3)) / 10 = (2 + 7) / 10 = 0.9 (not min(3/3, 1) = 1)
    humans = ["cat"] * k + ["dog"] * (10 - k)
    assert vqa_accuracy("cat", humans) == pytest.approx(expected, abs=1e-12)
    assert vqa_soft("cat", ["dog" if k < 5 else "cat", *humans]) == pytest.approx(expected, abs=1e-12)


def _official_loop(prediction: str, humans: list[str]) -> float:
    # the script's loop as written: one subset per human answer, min(1, matches / 3), mean over the subsets
    scores = []
    for left_out in range(len(humans)):
        others = [h for i, h in enumerate(humans) if i != left_out]
        scores.append(min(1.0, sum(vqa_normalize(h) == prediction for h in others) / 3))
    return sum(scores) / len(scores)


def test_closed_form_equals_the_loop_on_generated_panels():
    rng = random.Random(16)
    words = ["2", "two", "Two.", "3", "the cat", "cat", "a cat!", "none", "0", "yes"]
    for _ in range(300):
        humans = [rng.choice(words) for _ in range(rng.choice([4, 5, 9, 10, 10, 10]))]
        answer = rng.choice(words)
        assert vqa_accuracy(answer, humans) == pytest.approx(_official_loop(vqa_normalize(answer), humans), abs=1e-12)


def test_normalisation_applies_to_both_sides():
    humans = ["two", "2", "2.", "Two", "3", "3", "3", "three", "four", "4"]
    assert vqa_accuracy("2", humans) == 1.0  # four say 2 in some spelling
    assert vqa_accuracy("3", humans) == 1.0
    assert vqa_accuracy("4", humans) == pytest.approx(0.6)
    assert vqa_accuracy("", humans) == 0.0 and vqa_accuracy("2", []) == 0.0


def test_few_aliases_are_synonyms_not_a_panel():
    assert vqa_soft("two", ["2", "two"]) == 1.0  # answer and one alias: exact match, VQA-normalised
    assert vqa_soft("Crimson", ["red", "crimson", "scarlet"]) == 1.0
    assert vqa_soft("blue", ["red", "crimson", "scarlet"]) == 0.0


def test_manifest_with_ten_answers_scores_end_to_end(tmp_path):
    """A manifest line holding the ten human answers in answer_aliases, repeats kept: unanimous scores 1.0."""
    lines = [
        {"id": "q1", "variant": "positive", "image": "a.png", "image_size": [64, 64], "question": "Is it a cat?",
         "answer": "yes", "answer_aliases": ["yes"] * 10},
        {"id": "q2", "variant": "positive", "image": "b.png", "image_size": [64, 64], "question": "How many?",
         "answer": "2", "answer_aliases": ["2"] * 7 + ["3"] * 3},
    ]  # fmt: skip
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    unanimous, split = read_manifest(path).samples
    config = RewardConfig(matcher="vqa_soft")
    assert answer_reward("<answer>Yes.</answer>", unanimous, config=config) == 1.0
    assert accuracy_reward("<answer>three</answer>", split, config=config) == pytest.approx(0.9)
    assert accuracy_reward("<answer>two</answer>", split, config=config) == 1.0
    assert accuracy_reward("<answer>4</answer>", split, config=config) == 0.0
