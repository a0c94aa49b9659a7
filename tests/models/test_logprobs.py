"""`completion_logprobs` (one forward over prompt + completion) equals the log-probs seen while sampling."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from mmrl.models.inputs import full_sequence_inputs, repeat_prompt_inputs
from mmrl.models.logprobs import completion_logprobs
from mmrl.rollout.hf import generate_completions
from mmrl.testing import chat_batch

ROLLOUT = SimpleNamespace(temperature=1.0, top_p=1.0, top_k=0, max_completion_length=10, share_prompt=False)


def test_recomputed_logprobs_equal_sampling_logprobs(loaded, family, two_images):
    # a left-padded batch of two images of different sizes, G = 2 completions each, fp32 at temperature 1
    model, processor = loaded[family]
    inputs = chat_batch(processor, two_images)
    assert (inputs["attention_mask"][:, 0] == 0).any(), "the batch should be left-padded"
    torch.manual_seed(0)
    rollout = generate_completions(model, processor, inputs, 2, ROLLOUT)
    with torch.no_grad():
        logps = completion_logprobs(model, inputs, rollout.completion_ids, rollout.completion_mask)
    assert logps.shape == rollout.completion_ids.shape
    torch.testing.assert_close(logps, rollout.sampling_logps, atol=1e-5, rtol=0)


def test_right_padded_completions(loaded, family, two_images):
    # cut rows at different lengths (as an early stop would): the kept positions' log-probs do not change
    model, processor = loaded[family]
    inputs = chat_batch(processor, two_images)
    torch.manual_seed(1)
    rollout = generate_completions(model, processor, inputs, 2, ROLLOUT)
    lengths = torch.tensor([3, 10, 1, 6])
    mask = (torch.arange(10).expand(4, 10) < lengths[:, None]).long()
    ids = rollout.completion_ids.masked_fill(mask == 0, processor.tokenizer.pad_token_id)
    with torch.no_grad():
        logps = completion_logprobs(model, inputs, ids, mask)
    torch.testing.assert_close(logps, rollout.sampling_logps * mask, atol=1e-5, rtol=0)
    assert (logps[mask == 0] == 0).all()


def test_temperature_and_entropy(loaded, two_images):
    model, processor = loaded["qwen2_5_vl"]
    inputs = chat_batch(processor, two_images)
    torch.manual_seed(2)
    config = SimpleNamespace(**{**vars(ROLLOUT), "temperature": 0.7})
    rollout = generate_completions(model, processor, inputs, 2, config)
    with torch.no_grad():
        logps, entropy = completion_logprobs(
            model, inputs, rollout.completion_ids, rollout.completion_mask, temperature=0.7, return_entropy=True
        )
    torch.testing.assert_close(logps, rollout.sampling_logps, atol=1e-5, rtol=0)
    vocab = model.config.text_config.vocab_size
    assert entropy.shape == logps.shape and (entropy >= 0).all() and (entropy <= torch.log(torch.tensor(vocab))).all()


def test_gradients_flow_through_logprobs(tiny_model_dirs, two_images):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dirs["qwen3_vl"])
    processor = AutoProcessor.from_pretrained(tiny_model_dirs["qwen3_vl"])
    inputs = chat_batch(processor, two_images)
    ids = torch.randint(0, 500, (4, 5))
    completion_logprobs(model, inputs, ids, torch.ones_like(ids)).sum().backward()
    assert model.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0


def test_mm_token_type_ids_extended_with_zeros(loaded, two_images):
    model, processor = loaded["qwen2_5_vl"]
    inputs = chat_batch(processor, two_images)
    ids = torch.randint(0, 500, (4, 3))
    full = full_sequence_inputs(model, inputs, ids, torch.ones_like(ids))
    assert full["input_ids"].shape == (4, inputs["input_ids"].shape[1] + 3)
    assert (full["mm_token_type_ids"][:, -3:] == 0).all()
    # Qwen2.5-VL runs without mm_token_type_ids but computes other M-RoPE positions: the reason it is required
    no_types = {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}
    with torch.no_grad():
        with_types = completion_logprobs(model, inputs, ids, torch.ones_like(ids))
        without = completion_logprobs(model, no_types, ids, torch.ones_like(ids))
    assert (with_types - without).abs().max() > 1e-5


def test_repeat_prompt_inputs_keeps_groups_contiguous(loaded, two_images):
    model, processor = loaded["qwen2_vl"]
    inputs = chat_batch(processor, two_images)
    repeated = repeat_prompt_inputs(model, inputs, 3)
    assert torch.equal(repeated["input_ids"], inputs["input_ids"].repeat_interleave(3, dim=0))
    grid = inputs["image_grid_thw"]
    assert torch.equal(repeated["image_grid_thw"], grid.repeat_interleave(3, dim=0))
    first = int(grid[0].prod())
    pixels = repeated["pixel_values"]
    # rows 0-2 carry image 0's patches, rows 3-5 image 1's
    assert torch.equal(pixels[:first], inputs["pixel_values"][:first])
    assert torch.equal(pixels[2 * first : 3 * first], inputs["pixel_values"][:first])
    assert torch.equal(pixels[3 * first :][: int(grid[1].prod())], inputs["pixel_values"][first:])
