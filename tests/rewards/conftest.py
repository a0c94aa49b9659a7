"""Samples for the reward tests: one item in its three variants, a classification item, a multiple-choice item."""

import pytest

from mmrl.types import Sample


def _record(variant: str, **changes) -> dict:
    record = {
        "id": f"item1-{variant}",
        "group_id": "item1",
        "variant": variant,
        "image": f"images/item1-{variant}.png",
        "image_size": [640, 480],
        "question": "What color is the car?",
        "answer": "red",
        "answer_aliases": ["crimson"],
        "evidence": [[100.0, 100.0, 300.0, 250.0]],
        "distractors": [[400.0, 300.0, 600.0, 450.0]],
        "task": "vqa",
    }
    if variant == "counterfactual":
        record.update(answer="unknown", answer_aliases=[], masked=record["evidence"], meta={"original_answer": "red"})
    record.update(changes)
    return record


@pytest.fixture
def make_sample():
    """make_sample(variant, **record_changes) -> Sample of the car item."""
    return lambda variant="positive", **changes: Sample.from_record(_record(variant, **changes))


@pytest.fixture
def variants(make_sample):
    return {v: make_sample(v) for v in ("positive", "counterfactual", "random_masked")}


@pytest.fixture
def classification_sample(make_sample):
    return make_sample(
        "positive",
        question="Which class is this? Options: golden retriever, tabby cat, red fox, barn owl",
        answer="golden retriever",
        answer_aliases=[],
        task="classification",
    )


@pytest.fixture
def choice_sample(make_sample):
    return make_sample("positive", answer="B", answer_aliases=[], choices=["blue", "red", "green", "unknown"])
