"""The shared-prompt rollout (prefill once, expand the cache) against the plain repeated path."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mmrl.models.logprobs import completion_logprobs
from mmrl.rollout.hf import SUPPRESSED_TOKENS, generate_completions, token_ids
from mmrl.testing import biased_model, chat_batch

SHARED = SimpleNamespace(temperature=1.0, top_p=1.0, top_k=0, max_completion_length=10, share_prompt=True)


def with_(config: SimpleNamespace, **changes) -> SimpleNamespace:
    return SimpleNamespace(**{**vars(config), **changes})


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (0.7, 50, 0.9)])
def test_shared_logprobs_equal_recomputation(loaded, family, two_images, temperature, top_k, top_p):
    # the left-padded batch of two images of different sizes; G = 3 rows share each prompt's prefill
    model, processor = loaded[family]
    inputs = chat_batch(processor, two_images)
    torch.manual_seed(0)
    rollout = generate_completions(
        model, processor, inputs, 3, with_(SHARED, temperature=temperature, top_k=top_k, top_p=top_p)
    )
    assert rollout.completion_ids.shape[0] == 6
    with torch.no_grad():
        logps = completion_logprobs(
            model, inputs, rollout.completion_ids, rollout.completion_mask, temperature=temperature
        )
    torch.testing.assert_close(logps, rollout.sampling_logps, atol=1e-5, rtol=0)


def test_shared_samples_what_plain_samples(tiny_model_dirs, family, two_images):
    # same seed, same processors, same draws: the two paths give the same tokens, stops and log-probs
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dirs[family])
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    model = biased_model(tiny_model_dirs[family], im_end, 3.0)  # completions of many lengths
    inputs = chat_batch(processor, two_images)
    config = with_(SHARED, temperature=0.8, top_k=100, top_p=0.95, max_completion_length=12)
    torch.manual_seed(5)
    shared = generate_completions(model, processor, inputs, 4, config)
    torch.manual_seed(5)
    plain = generate_completions(model, processor, inputs, 4, with_(config, share_prompt=False))
    assert len(set(shared.completion_mask.sum(-1).tolist())) > 2
    assert torch.equal(shared.completion_ids, plain.completion_ids)
    assert torch.equal(shared.completion_mask, plain.completion_mask)
    assert shared.texts == plain.texts and torch.equal(shared.truncated, plain.truncated)
    torch.testing.assert_close(shared.sampling_logps, plain.sampling_logps, atol=1e-5, rtol=0)


def test_shared_suppresses_vision_tokens(tiny_model_dirs, two_images):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dirs["qwen3_vl"])
    image_pad = token_ids(processor, SUPPRESSED_TOKENS[:1])[0]
    model = biased_model(tiny_model_dirs["qwen3_vl"], image_pad, 50.0)
    rollout = generate_completions(model, processor, chat_batch(processor, two_images), 2, with_(SHARED))
    assert not (rollout.completion_ids == image_pad).any()


def test_plain_forward_after_shared_rollout_is_unaffected(loaded, two_images):
    # the expanded rope_deltas left on the model must not leak into the next uncached forward
    model, processor = loaded["qwen2_5_vl"]
    inputs = chat_batch(processor, two_images)
    with torch.no_grad():
        before = model(**inputs).logits
        generate_completions(model, processor, inputs, 4, SHARED)
        after = model(**inputs).logits
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
