"""The variant-aware answer reward, accuracy, and the config's validation."""

import pytest

from mmrl.config.loader import ConfigError, load_config
from mmrl.rewards.answer import accuracy_reward, answer_reward
from mmrl.rewards.config import RewardConfig
from mmrl.rewards.registry import REWARDS


def think(answer: str) -> str:
    return f"<think>The car is not blue; I know the hood is red.</think><answer>{answer}</answer>"


@pytest.mark.parametrize(
    ("variant", "answer", "expected"),
    [
        ("positive", "red", 1.0),
        ("positive", "Crimson", 1.0),
        ("positive", "blue", 0.0),
        ("positive", "unknown", -1.0),
        ("positive", "red or blue", 0.0),
        ("random_masked", "red", 1.0),
        ("random_masked", "cannot be determined", -1.0),
        ("counterfactual", "unknown", 1.0),
        ("counterfactual", "Not enough information", 1.0),
        ("counterfactual", "blue", -0.6),
        ("counterfactual", "red", -1.5),
        ("counterfactual", "The Red.", -1.5),
    ],
)
def test_answer_reward_table(variants, variant, answer, expected):
    assert answer_reward(think(answer), variants[variant]) == expected


def test_reasoning_words_never_count(variants):
    # DeFacto's first release searched the whole text for "not|know": this completion would have scored -1
    assert answer_reward(think("red"), variants["positive"]) == 1.0
    assert accuracy_reward(think("red"), variants["positive"]) == 1.0


def test_unparseable_scores_the_penalty_on_every_variant(variants):
    for sample in variants.values():
        assert answer_reward("red", sample) == -1.5
        assert answer_reward("<answer>red</answer><answer>red</answer>", sample) == -1.5
        assert accuracy_reward("red", sample) == 0.0


def test_label_that_contains_an_abstention_phrase(make_sample):
    album = make_sample(answer="Unknown Pleasures", answer_aliases=[])
    assert answer_reward(think("unknown pleasures"), album) == 1.0
    assert answer_reward(think("unknown"), album) == -1.0


def test_counterfactual_without_original_answer(make_sample):
    sample = make_sample("counterfactual", meta={})
    assert answer_reward(think("red"), sample) == -0.6  # nothing says red was the original: a guess
    assert answer_reward(think("unknown"), sample) == 1.0
    aliased = make_sample("counterfactual", meta={"original_answer": "red", "original_aliases": ["crimson"]})
    assert answer_reward(think("crimson"), aliased) == -1.5


def test_multiple_choice_abstention_by_letter(choice_sample, make_sample):
    config = RewardConfig(matcher="multiple_choice")
    assert answer_reward(think("B"), choice_sample, config=config) == 1.0
    assert answer_reward(think("red"), choice_sample, config=config) == 1.0
    assert answer_reward(think("D"), choice_sample, config=config) == -1.0  # option D is "unknown"
    cf = make_sample("counterfactual", choices=["blue", "red", "green", "unknown"], meta={"original_answer": "B"})
    assert answer_reward(think("D"), cf, config=config) == 1.0
    assert answer_reward(think("(B) red"), cf, config=config) == -1.5
    assert answer_reward(think("A"), cf, config=config) == -0.6


def test_direct_template(variants):
    config = RewardConfig(template="direct", terms={"answer": 1.0, "format": 1.0})
    assert answer_reward("Red", variants["positive"], config=config) == 1.0
    assert answer_reward("<answer>red</answer>", variants["positive"], config=config) == -1.5


def test_configured_scores(variants):
    config = RewardConfig(
        counterfactual_abstain_reward=2.0,
        counterfactual_guess_reward=-0.1,
        counterfactual_original_reward=-0.2,
        abstain_on_answerable_penalty=-0.3,
        unparseable_penalty=-5.0,
    )
    scores = [answer_reward(think(a), variants["counterfactual"], config=config) for a in ("unknown", "blue", "red")]
    assert scores == [2.0, -0.1, -0.2]
    assert answer_reward(think("unknown"), variants["positive"], config=config) == -0.3
    assert answer_reward("", variants["positive"], config=config) == -5.0


def test_config_loads_and_validates(tmp_path):
    path = tmp_path / "rewards.yaml"
    path.write_text("terms: {answer: 1.0, grounding: 0.25}\nmatcher: vqa_soft\n")
    config = load_config(RewardConfig, path)
    assert config.terms == {"answer": 1.0, "grounding": 0.25} and config.matcher == "vqa_soft"
    with pytest.raises(ConfigError, match="did you mean 'grounding'"):
        load_config(RewardConfig, overrides=["terms={groundng: 1.0}"])
    with pytest.raises(ConfigError, match="unparseable_penalty"):
        load_config(RewardConfig, overrides=["unparseable_penalty=-0.2"])
    with pytest.raises(ConfigError, match="iou_threshold"):
        load_config(RewardConfig, overrides=["iou_threshold=1.5"])
    with pytest.raises(ConfigError, match="matcher"):
        load_config(RewardConfig, overrides=["matcher=substring"])
    with pytest.raises(ConfigError, match="remove grounding"):
        load_config(RewardConfig, overrides=["template=direct"])  # the default terms include grounding
    with pytest.raises(ConfigError, match="at least one"):
        load_config(RewardConfig, overrides=["terms={}"])


def test_default_terms_exist():
    assert set(RewardConfig().terms) <= set(REWARDS)
    RewardConfig().validate()


def test_counterfactual_hedge_names_the_original(make_sample):
    cf = make_sample("counterfactual")
    assert answer_reward(think("red or unknown"), cf) == -1.5  # the hedge is the original answer
    assert answer_reward(think("unknown, maybe blue"), cf) == 1.0  # names no original: an abstention
    yes_no = make_sample("counterfactual", meta={"original_answer": "no"})
    assert answer_reward(think("No answer."), yes_no) == 1.0  # "no" inside the phrase "no answer" is not the answer
    assert answer_reward(think("no"), yes_no) == -1.5
