"""Known reward hacks: each must score no better than an honest wrong answer (total of the default terms).

Each row: a hack completion and the honest completion it is compared with, identical except for the trick.
"""

import pytest

from mmrl.rewards.compose import score_completions
from mmrl.rewards.config import RewardConfig
from mmrl.rewards.parsing import format_boxes
from mmrl.types import Box

EVIDENCE = [Box(100, 100, 300, 250)]
WRONG_BOX = [Box(0, 0, 50, 50)]


def think(answer_part: str, boxes=EVIDENCE) -> str:
    return f"<think>The car is here {format_boxes(boxes)}.</think>{answer_part}"


def total(completion, sample, config=None) -> float:
    return score_completions([completion], [sample], config or RewardConfig()).total[0]


ANSWER_HACKS = [
    ("empty answer", think("<answer></answer>"), think("<answer>blue</answer>")),
    ("whitespace answer", think("<answer> \n </answer>"), think("<answer>blue</answer>")),
    ("A or B or C", think("<answer>red or blue or green</answer>"), think("<answer>blue</answer>")),
    ("slash list", think("<answer>red/blue/green</answer>"), think("<answer>blue</answer>")),
    ("two blocks, right first", think("<answer>red</answer><answer>blue</answer>"), think("<answer>blue</answer>")),
    ("two blocks, right last", think("<answer>blue</answer><answer>red</answer>"), think("<answer>blue</answer>")),
    ("two blocks, both right", think("<answer>red</answer><answer>red</answer>"), think("<answer>blue</answer>")),
    ("nested blocks", think("<answer><answer>red</answer></answer>"), think("<answer>blue</answer>")),
    ("answer outside tags", think("red"), think("<answer>blue</answer>")),
    ("answer and abstention", think("<answer>red or unknown</answer>"), think("<answer>blue</answer>")),
]


@pytest.mark.parametrize(("name", "hack", "honest"), ANSWER_HACKS, ids=[row[0] for row in ANSWER_HACKS])
@pytest.mark.parametrize("variant", ["positive", "counterfactual", "random_masked"])
def test_answer_hacks(variants, name, hack, honest, variant):
    sample = variants[variant]
    assert total(hack, sample) <= total(honest, sample), name


def test_every_class_name_listed(classification_sample):
    config = RewardConfig(matcher="label")
    every = think("<answer>golden retriever, tabby cat, red fox, barn owl</answer>")
    honest_wrong = think("<answer>tabby cat</answer>")
    assert total(every, classification_sample, config) <= total(honest_wrong, classification_sample, config)
    every_letter = think("<answer>A B C D</answer>")
    assert total(every_letter, classification_sample, config) <= total(honest_wrong, classification_sample, config)


BOX_HACKS = [
    ("whole image", think("<answer>red</answer>", [Box(0, 0, 640, 480)])),
    ("same box 30 times", think("<answer>red</answer>", EVIDENCE * 30)),
    ("wrong box 10 times", think("<answer>red</answer>", WRONG_BOX * 10)),
    ("box past the edges", think("<answer>red</answer>", [Box(-1000, -1000, 5000, 5000)])),
]


@pytest.mark.parametrize(("name", "hack"), BOX_HACKS, ids=[row[0] for row in BOX_HACKS])
@pytest.mark.parametrize("variant", ["positive", "random_masked"])
def test_box_hacks(variants, name, hack, variant):
    honest_wrong_box = think("<answer>red</answer>", WRONG_BOX)
    assert total(hack, variants[variant]) <= total(honest_wrong_box, variants[variant]), name


@pytest.mark.parametrize("mode", ["f1", "mean_iou", "giou", "iou2"])
def test_repeating_the_right_box_never_helps(variants, mode):
    config = RewardConfig(grounding_mode=mode)
    once = think("<answer>red</answer>", EVIDENCE)
    for copies in (2, 5, 20, 21):
        assert total(think("<answer>red</answer>", EVIDENCE * copies), variants["positive"], config) < total(
            once, variants["positive"], config
        )


def test_unknown_on_every_variant(variants):
    """Averaged over the three variants, always abstaining is worse than always guessing wrong (and than honesty)."""
    always_unknown = sum(total(think("<answer>unknown</answer>"), s) for s in variants.values()) / 3
    always_wrong = sum(total(think("<answer>blue</answer>"), s) for s in variants.values()) / 3
    honest = {"positive": "red", "random_masked": "red", "counterfactual": "unknown"}
    right = sum(total(think(f"<answer>{honest[v]}</answer>"), s) for v, s in variants.items()) / 3
    # answer terms by hand: unknown (-1 - 1 + 1) / 3 = -1/3; blue (0 + 0 - 0.6) / 3 = -0.2; the rest is shared
    assert always_unknown < always_wrong < right
    assert always_wrong - always_unknown == pytest.approx(-0.2 + 1 / 3)


@pytest.mark.parametrize(
    ("hack", "honest"),
    [("", "blue"), ("   ", "blue"), ("red or blue", "blue"), ("<answer>red</answer>", "blue"), ("red\n" * 40, "blue")],
)
def test_direct_template_hacks(variants, hack, honest):
    config = RewardConfig(template="direct", terms={"answer": 1.0, "format": 0.5})
    assert total(hack, variants["positive"], config) <= total(honest, variants["positive"], config)
