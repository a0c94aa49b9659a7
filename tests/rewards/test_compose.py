"""Composition: weighted totals, None terms, logging summaries, and the registry's contract."""

import inspect

import pytest

from mmrl.boxes import FrameSpec
from mmrl.rewards.compose import score_completions
from mmrl.rewards.config import REWARD_NAMES, RewardConfig
from mmrl.rewards.format import box_format_reward, direct_format_reward, format_reward
from mmrl.rewards.parsing import format_boxes
from mmrl.rewards.penalties import length_penalty, repetition_penalty
from mmrl.rewards.registry import REWARDS
from mmrl.types import Box

GOOD = "<think>The car " + format_boxes([Box(100, 100, 300, 250)]) + " is red.</think><answer>red</answer>"


def test_totals_by_hand(variants):
    config = RewardConfig()  # answer 1.0, format 0.5, grounding 0.5
    samples = [variants["positive"], variants["counterfactual"], variants["positive"]]
    completions = [GOOD, "<think>masked</think><answer>unknown</answer>", "red"]
    scores = score_completions(completions, samples, config)
    assert scores.terms == {"answer": [1.0, 1.0, -1.5], "format": [1.0, 1.0, 0.0], "grounding": [1.0, None, 0.0]}
    # 1 + 0.5 + 0.5; the counterfactual's None grounding adds nothing: 1 + 0.5; unparseable: -1.5
    assert scores.total == [2.0, 1.5, -1.5]


def test_registry_names_match_config():
    # the config validates names from REWARD_NAMES without importing the functions: the two must agree
    assert tuple(REWARDS) == REWARD_NAMES


def test_weights_and_optional_terms(variants):
    config = RewardConfig(terms={"answer": 2.0, "length": 1.0, "repetition": 0.5}, length_max_chars=10)
    scores = score_completions(["<answer>red</answer>"], [variants["positive"]], config)
    # answer 1 x 2; length: 20 chars over a 10-char budget is one budget over -> -1; no repetition
    assert scores.terms == {"answer": [1.0], "length": [-1.0], "repetition": [0.0]}
    assert scores.total == [1.0]


def test_mismatched_lengths(variants):
    with pytest.raises(ValueError, match="2 completions but 1 samples"):
        score_completions(["a", "b"], [variants["positive"]], RewardConfig())


def test_every_reward_has_the_contract():
    for name, fn in REWARDS.items():
        params = inspect.signature(fn).parameters
        assert list(params)[:2] == ["completion", "sample"], name
        assert params["config"].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert params["frame"].default == FrameSpec(), name


def test_format_terms(variants, make_sample):
    positive = variants["positive"]
    assert format_reward(GOOD, positive) == 1.0
    broken = GOOD.replace("</answer>", "</answer> " + format_boxes([[0, 0, 700, 10]]))
    assert format_reward(broken, positive) == 0.0  # text after the answer breaks the structure
    half = GOOD.replace("is red", "or " + format_boxes([[0, 0, 641, 10]]))  # past the 640-pixel edge
    assert format_reward(half, positive) == 0.5
    assert box_format_reward(half, positive) == 0.5
    assert box_format_reward("<answer>red</answer>", positive) is None
    direct = RewardConfig(template="direct", direct_max_chars=5)
    assert format_reward("red", positive, config=direct) == 1.0
    assert format_reward("crimson", positive, config=direct) == 0.0  # over 5 characters
    assert direct_format_reward("<think>x</think>red", positive) == 0.0


def test_penalties_by_hand(variants):
    positive = variants["positive"]
    config = RewardConfig(repetition_ngram=1, repetition_threshold=0.5)
    # 4 words, 2 distinct: half are repeats, which is the threshold -> no penalty yet
    assert repetition_penalty("red car red car", positive, config=config) == 0.0
    # 5 words, 1 distinct: 4/5 repeated -> -(0.8 - 0.5) / 0.5 = -0.6
    assert repetition_penalty("red red red red red", positive, config=config) == pytest.approx(-0.6)
    assert repetition_penalty("", positive) == 0.0
    assert length_penalty("x" * 2000, positive) == 0.0
    assert length_penalty("x" * 3000, positive) == -0.5
