"""Every reward returns a finite float or None for any string; parsers never raise (hypothesis + adversarial cases)."""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmrl.boxes import Frame, FrameSpec
from mmrl.rewards.abstention import is_abstention
from mmrl.rewards.compose import score_completions
from mmrl.rewards.config import RewardConfig
from mmrl.rewards.matchers import MATCHERS
from mmrl.rewards.parsing import (
    normalize_answer,
    parse_answer,
    parse_box_candidates,
    parse_boxes,
    parse_choice,
    parse_direct,
    parse_number,
)
from mmrl.rewards.registry import REWARDS
from mmrl.types import Sample

FRAMES = [FrameSpec(), FrameSpec(Frame.NORM_1000), FrameSpec.for_family("qwen2_5_vl")]
CONFIGS = [
    RewardConfig(terms=dict.fromkeys(REWARDS, 1.0)),
    RewardConfig(
        terms=dict.fromkeys(REWARDS, 1.0),
        template="direct",
        grounding_mode="giou",
        grounding_matching="greedy",
        counterfactual_no_box_reward=0.5,
        matcher="anls",
    ),
    RewardConfig(terms=dict.fromkeys(REWARDS, 1.0), matcher="relaxed_numeric", grounding_mode="iou2"),
    RewardConfig(terms=dict.fromkeys(REWARDS, 1.0), matcher="multiple_choice", grounding_mode="mean_iou"),
]

# pieces models emit, so random text often forms (broken) tags and boxes
PIECES = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "<box>",
    "</box>",
    "<bbox>",
    "</bbox>",
    "<|box_start|>",
    "<|box_end|>",
    "[",
    "]",
    "(",
    ")",
    ",",
    '"bbox_2d": ',
    "nan",
    "inf",
    "-inf",
    "1e999",
    "9" * 400,
    "-0",
    "0",
    "640",
    "1000",
    "3.5",
    "unknown",
    "red",
    "A",
    "B.",
    " or ",
    " ",
    "\n",
    "é",
    "ＲＥＤ",
    "\u200b",
    "🚗",
    "_",
]
completions = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(PIECES), max_size=60).map("".join),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=5)), max_size=40).map("".join),
)
boxes = st.lists(
    st.tuples(*[st.floats(-1e6, 1e6, allow_nan=False) for _ in range(4)]).map(
        lambda v: [min(v[0], v[2]), min(v[1], v[3]), max(v[0], v[2]) + 1, max(v[1], v[3]) + 1]
    ),
    max_size=4,
)


@pytest.fixture(scope="module")
def samples():
    base = {"image": "i.png", "question": "q", "answer_aliases": ["crimson"], "meta": {"original_answer": "red"}}
    return [
        Sample.from_record(
            {
                **base,
                "id": "p",
                "variant": "positive",
                "image_size": [640, 480],
                "answer": "red",
                "evidence": [[10, 10, 100, 100]],
                "distractors": [[200, 200, 300, 300]],
                "choices": ["blue", "red"],
            }
        ),
        Sample.from_record(
            {**base, "id": "c", "variant": "counterfactual", "image_size": [1, 300], "answer": "unknown"}
        ),
        Sample.from_record(
            {
                **base,
                "id": "r",
                "variant": "random_masked",
                "image_size": [28, 28],
                "answer": "12",
                "evidence": [[0, 0, 28, 28]],
            }
        ),
    ]


def _check_all(completion, samples):
    # each config with one frame (cycled): every config and every frame is exercised, at a third of the cost
    for i, config in enumerate(CONFIGS):
        frame = FRAMES[i % len(FRAMES)]
        for sample in samples:
            for name, fn in REWARDS.items():
                value = fn(completion, sample, config=config, frame=frame)
                assert value is None or (isinstance(value, float) and math.isfinite(value)), (name, value)
        totals = score_completions([completion] * len(samples), samples, config, frame).total
        assert all(math.isfinite(t) for t in totals)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(completion=completions)
def test_rewards_are_finite_or_none(samples, completion):
    _check_all(completion, samples)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(evidence=boxes, predicted=boxes, text=st.text(max_size=20))
def test_random_boxes(samples, evidence, predicted, text):
    sample = Sample.from_record(
        {
            "id": "x",
            "variant": "positive",
            "image": "i.png",
            "image_size": [640, 480],
            "question": "q",
            "answer": text,
            "evidence": evidence,
            "distractors": evidence[:1],
        }
    )
    completion = "<think><box>" + str(predicted) + f"</box></think><answer>{text}</answer>"
    _check_all(completion, [sample])
    for matcher in MATCHERS.values():
        assert 0.0 <= matcher(text, [text, "x"], ["a", text], RewardConfig()) <= 1.0


@settings(max_examples=200, deadline=None)
@given(text=completions)
def test_parsers_never_raise(text):
    for parse in (parse_answer, parse_direct, parse_number, normalize_answer, is_abstention):
        parse(text)
    parse_choice(text, 4)
    assert all(math.isfinite(v) for b in parse_boxes(text) for v in b.to_list())
    assert isinstance(parse_box_candidates(text), list)


ADVERSARIAL = [
    "",
    "x" * 100_000,
    "<answer>" * 20_000,
    "<box>" * 20_000 + "</box>",
    "<think>" * 10_000 + "</answer>" * 10_000,
    "<box>[" + "1," * 30_000 + "1]</box>",
    "<box>" + "[[0,0,1,1]]," * 5_000 + "</box>",
    "<|box_start|>" + "(1,2)," * 10_000 + "<|box_end|>",
    "<answer>" + "red " * 20_000 + "</answer>",
    "<answer>unknown</answer>" * 1000,
    "<box>[[1e308, 1e308, 1.7e308, 1.7e308]]</box><answer>1e308</answer>",
    "<box>[[-1e308, -1e308, 1.7e308, 1.7e308]]</box>",
    "<box>[[" + "9" * 5000 + ",0,1,1]]</box>",
    "<answer>nan</answer><box>[[nan, inf, -inf, 1]]</box>",
    "<think><answer>red</think></answer>",
    "\x00\ud7ff\ufffd<answer>\u0301</answer>",
]


@pytest.mark.parametrize("completion", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_strings(samples, completion):
    _check_all(completion, samples)
