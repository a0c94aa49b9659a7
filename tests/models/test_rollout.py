"""Rollout: contiguous groups, stop tokens and masks, suppressed vision tokens, exact sampling log-probs; one
batched generation per step equal to each prompt generated alone; box tokens kept in the texts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mmrl.models.logprobs import completion_logprobs
from mmrl.rewards.parsing import parse_box_candidates
from mmrl.rollout.hf import (
    SUPPRESSED_TOKENS,
    _trim_finished,
    completion_mask_from_ids,
    finish_rollout,
    generate_completions,
    token_ids,
)
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


# --- one generation per step: B prompts prefilled once, B*G rows decoded together, each group on its own seed ---

SHARED = SimpleNamespace(temperature=0.8, top_p=0.95, top_k=100, max_completion_length=12, share_prompt=True)


def test_batched_generation_equals_each_prompt_alone(tiny_model_dirs, family, two_images):
    # three prompts (one repeated with another seed), left-padded into one batch: every group's tokens, stops and
    # log-probs are those of that prompt generated on its own with its seed, by the shared path (the old per-sample
    # rollout: torch.manual_seed(seed), then G rows) and by the plain model.generate path
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dirs[family])
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    model = biased_model(tiny_model_dirs[family], im_end, 3.0)  # completions of many lengths
    images = [*two_images, two_images[0]]
    inputs = chat_batch(processor, images)
    seeds = [11, 22, 33]
    batched = generate_completions(model, processor, inputs, 4, SHARED, seeds=seeds)
    assert batched.completion_ids.shape[0] == 12
    assert len(set(batched.completion_mask.sum(-1).tolist())) > 2
    groups = batched.split()
    assert not torch.equal(groups[0].completion_ids, groups[2].completion_ids)  # same prompt, other seed
    for b, (group, seed) in enumerate(zip(groups, seeds, strict=True)):
        alone = unpadded_row(inputs, b)
        torch.manual_seed(seed)
        old = generate_completions(model, processor, alone, 4, SHARED)  # the per-sample path of the old rollout
        plain = generate_completions(model, processor, alone, 4, SimpleNamespace(**{**vars(SHARED),
                                     "share_prompt": False}), seeds=[seed])  # fmt: skip
        for other in (old, plain):
            assert torch.equal(group.completion_ids, other.completion_ids), (b, group.completion_ids)
            assert torch.equal(group.completion_mask, other.completion_mask)
            assert group.texts == other.texts and torch.equal(group.truncated, other.truncated)
            torch.testing.assert_close(group.sampling_logps, other.sampling_logps, atol=1e-5, rtol=0)
        with torch.no_grad():  # and the log-probs are the policy's, recomputed
            logps = completion_logprobs(model, alone, group.completion_ids, group.completion_mask, temperature=0.8)
        torch.testing.assert_close(logps, group.sampling_logps, atol=1e-5, rtol=0)


def test_batched_prefill_keeps_only_the_last_position(loaded, two_images):
    model, processor = loaded["qwen2_5_vl"]
    inputs = chat_batch(processor, two_images)
    widths = []
    handle = model.register_forward_hook(lambda module, args, out: widths.append(out.logits.shape[1]))
    try:
        rollout = generate_completions(model, processor, inputs, 3, SHARED, seeds=[1, 2])
    finally:
        handle.remove()
    assert inputs["input_ids"].shape[1] > 50 and widths[0] == 1  # the prefill: one position of 50+
    assert set(widths) == {1} and len(widths) == rollout.completion_ids.shape[1]  # then one per decoded token


def test_seeds_must_match_the_prompts(loaded, two_images):
    model, processor = loaded["qwen2_vl"]
    inputs = chat_batch(processor, two_images)
    with pytest.raises(ValueError, match="1 seeds for 2 prompts"):
        generate_completions(model, processor, inputs, 2, SHARED, seeds=[1])
    with pytest.raises(ValueError, match="one prompt per call"):
        generate_completions(model, processor, inputs, 2, SimpleNamespace(**{**vars(SHARED), "share_prompt": False}),
                             seeds=[1, 2])  # fmt: skip


def test_trim_cuts_the_columns_decoded_after_every_row_stopped():
    # stop id 2, pad 2: rows stop at columns 1 and 2; columns 3-5 were decoded between the host's stop checks
    ids = torch.tensor([[5, 2, 2, 2, 2, 2], [5, 6, 2, 2, 2, 2]])
    cut, logps = _trim_finished(ids, torch.arange(12.0).view(2, 6), torch.tensor([2, 9]))
    assert cut.tolist() == [[5, 2, 2], [5, 6, 2]] and logps.tolist() == [[0, 1, 2], [6, 7, 8]]
    running = torch.tensor([[5, 5, 5], [5, 2, 2]])  # a row that never stopped keeps every column
    assert _trim_finished(running, running.float(), torch.tensor([2]))[0].shape == (2, 3)


def test_texts_keep_qwen_box_tokens(loaded):
    # <|box_start|> / <|box_end|> are special tokens: a decode that skips them would hide the box from the parser
    _, processor = loaded["qwen2_5_vl"]
    tokenizer = processor.tokenizer
    text = "<think><|box_start|>(10,20),(30,40)<|box_end|></think><answer>red</answer>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + token_ids(processor, ("<|im_end|>",))
    assert parse_box_candidates(tokenizer.decode(ids, skip_special_tokens=True)) == []  # the trap
    rollout = finish_rollout(processor, torch.tensor([ids, ids]), torch.zeros(2, len(ids)), 2)
    assert rollout.texts == [text, text]
    assert parse_box_candidates(rollout.texts[0]) == [[10.0, 20.0, 30.0, 40.0]]
