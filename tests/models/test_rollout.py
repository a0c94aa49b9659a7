"""Rollout: contiguous groups, stop tokens and masks, suppressed vision tokens, exact sampling log-probs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mmrl.models.logprobs import completion_logprobs
from mmrl.rollout.hf import SUPPRESSED_TOKENS, completion_mask_from_ids, generate_completions, token_ids
from mmrl.testing import biased_model, chat_batch

ROLLOUT = SimpleNamespace(temperature=1.0, top_p=1.0, top_k=0, max_completion_length=12, share_prompt=False)


def unpadded_row(inputs, b: int) -> dict:
    """Prompt b of a batch on its own, without its left padding (each prompt here has one image)."""
    keep = inputs["attention_mask"][b] == 1
    patches = inputs["image_grid_thw"].prod(-1).tolist()
    start = sum(patches[:b])
    return {
        "input_ids": inputs["input_ids"][b : b + 1, keep],
        "attention_mask": inputs["attention_mask"][b : b + 1, keep],
        "mm_token_type_ids": inputs["mm_token_type_ids"][b : b + 1, keep],
        "pixel_values": inputs["pixel_values"][start : start + patches[b]],
        "image_grid_thw": inputs["image_grid_thw"][b : b + 1],
    }


def test_completion_mask_from_ids():
    ids = torch.tensor([[5, 6, 2, 7, 7], [5, 2, 9, 2, 1], [4, 4, 4, 4, 4]])
    mask, truncated = completion_mask_from_ids(ids, [2, 9])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert truncated.tolist() == [False, False, True]


def test_groups_are_contiguous(loaded, two_images):
    # row r belongs to prompt r // G: scored against that prompt alone (and unpadded) it has its sampling log-probs
    model, processor = loaded["qwen2_5_vl"]
    torch.manual_seed(3)
    inputs = chat_batch(processor, two_images)
    rollout = generate_completions(model, processor, inputs, 3, ROLLOUT)
    assert rollout.completion_ids.shape[0] == 6 and rollout.num_generations == 3 and len(rollout.texts) == 6
    alone = [unpadded_row(inputs, b) for b in range(2)]
    for row in range(6):
        ids, mask = rollout.completion_ids[row : row + 1], rollout.completion_mask[row : row + 1]
        with torch.no_grad():
            own = completion_logprobs(model, alone[row // 3], ids, mask)
            other = completion_logprobs(model, alone[1 - row // 3], ids, mask)
        torch.testing.assert_close(own, rollout.sampling_logps[row : row + 1], atol=1e-5, rtol=0)
        assert (other - own).abs().max() > 1e-3


def test_stops_at_im_end_and_masks_after(tiny_model_dirs, family, two_images):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dirs[family])
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    # a bias that makes <|im_end|> likely but not certain: completions of many lengths
    model = biased_model(tiny_model_dirs[family], im_end, 5.5)
    inputs = chat_batch(processor, two_images)
    torch.manual_seed(0)
    rollout = generate_completions(model, processor, inputs, 4, ROLLOUT)
    lengths = rollout.completion_mask.sum(-1)
    assert len(set(lengths.tolist())) > 2, lengths
    for row, length, cut in zip(rollout.completion_ids, lengths, rollout.truncated, strict=True):
        if not cut:
            assert row[length - 1] == im_end and (row[:length - 1] != im_end).all()  # fmt: skip
            assert (row[length:] == processor.tokenizer.pad_token_id).all()
    assert all("<|im_end|>" not in text for text in rollout.texts)
    with torch.no_grad():
        logps = completion_logprobs(model, inputs, rollout.completion_ids, rollout.completion_mask)
    torch.testing.assert_close(logps, rollout.sampling_logps, atol=1e-5, rtol=0)


@pytest.mark.parametrize("token", SUPPRESSED_TOKENS)
def test_vision_tokens_are_never_sampled(tiny_model_dirs, two_images, token):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dirs["qwen2_vl"])
    token_id = token_ids(processor, (token,))[0]
    model = biased_model(tiny_model_dirs["qwen2_vl"], token_id, 50.0)  # without suppression every token is this one
    inputs = chat_batch(processor, two_images)
    rollout = generate_completions(
        model, processor, inputs, 2, SimpleNamespace(**{**vars(ROLLOUT), "max_completion_length": 4})
    )
    assert not (rollout.completion_ids == token_id).any()


def test_generation_restores_training_mode(tiny_model_dirs, two_images):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dirs["qwen3_vl"]).train()
    processor = AutoProcessor.from_pretrained(tiny_model_dirs["qwen3_vl"])
    generate_completions(model, processor, chat_batch(processor, two_images[:1]), 2, ROLLOUT)
    assert model.training


def test_unknown_token_is_an_error(loaded):
    _, processor = loaded["qwen2_vl"]
    with pytest.raises(ValueError, match="no token"):
        token_ids(processor, ("<|not_a_token|>",))
