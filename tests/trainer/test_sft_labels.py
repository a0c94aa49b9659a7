"""Which samples an SFT run trains on, and with which labels (`sft.counterfactual_fraction`,
`sft.other_counterfactuals`): the warm start of the quickstart learns from ordinary-VQA-style labels."""

import pytest

from mmrl.errors import UserError
from mmrl.rl.sft import SFTOptions, select_samples
from mmrl.types import Box, Sample, Variant


def _items(n):
    out = []
    for g in range(n):
        box = (Box(1, 1, 9, 9),)
        out.append(Sample(f"{g}:p", f"g{g}", Variant.POSITIVE, "p.png", (84, 84), "What color is the star?", "red",
                          evidence=box))  # fmt: skip
        out.append(Sample(f"{g}:c", f"g{g}", Variant.COUNTERFACTUAL, "c.png", (84, 84), "What color is the star?",
                          "unknown", evidence=box, masked=(Box(0, 0, 10, 10),),
                          meta={"original_answer": "red", "original_aliases": []}))  # fmt: skip
        out.append(Sample(f"{g}:r", f"g{g}", Variant.RANDOM_MASKED, "r.png", (84, 84), "What color is the star?",
                          "red", evidence=box))  # fmt: skip
    return out


def test_dropped_counterfactuals_leave_only_the_labelled_share():
    kept = select_samples(_items(10), SFTOptions(counterfactual_fraction=0.2), seed=0)
    assert len(kept) == 20 + 2  # 10 positives, 10 random-masked, 2 of 10 counterfactuals
    assert sorted(s.answer for s in kept if s.variant is Variant.COUNTERFACTUAL) == ["unknown", "unknown"]


def test_other_counterfactuals_answered_regardless_keep_every_image():
    options = SFTOptions(counterfactual_fraction=0.2, other_counterfactuals="original")
    kept = select_samples(_items(10), options, seed=0)
    assert len(kept) == 30  # every image of every item
    masked_images = [s for s in kept if s.image == "c.png"]
    assert sorted(s.answer for s in masked_images) == ["red"] * 8 + ["unknown"] * 2
    regardless = [s for s in masked_images if s.answer == "red"]
    # labelled as if the evidence were there: the masked box is where it "is", and the target names it
    assert all(s.variant is Variant.POSITIVE and s.evidence == (Box(0, 0, 10, 10),) for s in regardless)
    # the same seed picks the same labelled items whatever happens to the others
    dropped = select_samples(_items(10), SFTOptions(counterfactual_fraction=0.2), seed=0)
    labelled = {s.group_id for s in masked_images if s.answer == "unknown"}
    assert labelled == {s.group_id for s in dropped if s.variant is Variant.COUNTERFACTUAL}


def test_a_counterfactual_without_its_original_answer_is_a_clear_error():
    broken = [s if s.variant is not Variant.COUNTERFACTUAL else Sample(s.id, s.group_id, s.variant, s.image,
              s.image_size, s.question, s.answer) for s in _items(2)]  # fmt: skip
    with pytest.raises(UserError, match="no meta.original_answer"):
        select_samples(broken, SFTOptions(counterfactual_fraction=0.0, other_counterfactuals="original"), seed=0)
