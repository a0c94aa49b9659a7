"""Each family's tiny model: a forward with images, generation, and gradients reaching vision and language."""

from __future__ import annotations

import torch

from mmrl.models.loading import parameter_groups
from mmrl.testing import chat_batch


def test_forward_with_images(loaded, family, two_images):
    model, processor = loaded[family]
    inputs = chat_batch(processor, two_images)
    assert set(inputs) >= {"input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw"}
    with torch.no_grad():
        logits = model(**inputs).logits  # (B, P, V)
    assert logits.shape == (*inputs["input_ids"].shape, model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()
    # the image changes the output: a prompt's logits depend on its pixels
    other = dict(inputs, pixel_values=inputs["pixel_values"].flip(0))
    with torch.no_grad():
        assert not torch.allclose(model(**other).logits[:, -1], logits[:, -1])


def test_generate(loaded, family, two_images):
    model, processor = loaded[family]
    inputs = chat_batch(processor, two_images)
    prompt_length = inputs["input_ids"].shape[1]
    out = model.generate(**inputs, max_new_tokens=5, do_sample=True)
    assert out.shape[0] == 2 and prompt_length < out.shape[1] <= prompt_length + 5
    assert torch.equal(out[:, :prompt_length], inputs["input_ids"])


def test_backward_reaches_vision_and_language(tiny_model_dirs, family, two_images):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dirs[family])
    processor = AutoProcessor.from_pretrained(tiny_model_dirs[family])
    inputs = chat_batch(processor, two_images)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    model(**inputs, labels=labels).loss.backward()
    groups = parameter_groups(model)
    for key in ("vision", "merger", "language"):
        grads = [p.grad for _, p in groups[key] if p.grad is not None]
        assert grads, f"no gradient in {key}"
        assert sum(g.abs().sum().item() for g in grads) > 0, f"zero gradient in {key}"
    # the first vision block and the patch embedding are reached, not only the last layers
    patch = dict(groups["vision"])
    assert any("patch_embed" in n and patch[n].grad is not None and patch[n].grad.abs().sum() > 0 for n in patch)
