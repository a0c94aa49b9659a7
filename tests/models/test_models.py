"""`load_model_and_processor`: tiny build on demand, family, pixel budget, freezing, LoRA, checkpointing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mmrl.config.schema import ModelConfig
from mmrl.errors import UserError
from mmrl.models.loading import base_model, image_pad_token_id, load_model_and_processor, parameter_groups, vision_tower
from mmrl.testing import chat_batch


def config_for(path, **changes) -> ModelConfig:
    return ModelConfig(name_or_path=str(path), tiny_family=None, **changes)


def backward(model, processor, images):
    inputs = chat_batch(processor, images)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    model(**inputs, labels=labels).loss.backward()


def has_grad(params) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in params)


def test_builds_tiny_model_when_missing(tmp_path):
    path = tmp_path / "runs" / "tiny"
    model, processor, family = load_model_and_processor(ModelConfig(name_or_path=str(path), tiny_family="qwen3_vl"))
    assert family == "qwen3_vl" and (path / "config.json").exists() and model.training
    assert image_pad_token_id(processor) == model.config.image_token_id


def test_missing_model_without_tiny_family_is_a_user_error(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="neither a folder nor a cached hub model"):
        load_model_and_processor(config_for(tmp_path / "nowhere"))
    # an uncached hub id on an offline node: one line, never a freshly built tiny model (tiny_family is off)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="hub is offline"):
        load_model_and_processor(ModelConfig(name_or_path="Qwen/Not-Cached-VL-0B"))
    assert not Path("Qwen").exists()


def test_family_detection_and_unsupported_type(tiny_model_dirs, family, tmp_path):
    _, _, detected = load_model_and_processor(config_for(tiny_model_dirs[family]))
    assert detected == family
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dirs[family], other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "llava"}))
    with pytest.raises(UserError, match="unsupported model type"):
        load_model_and_processor(config_for(other))


def test_pixel_budget_sets_visual_tokens(tiny_model_dirs, two_images, tmp_path):
    _, processor, _ = load_model_and_processor(config_for(tiny_model_dirs["qwen2_5_vl"], max_pixels=28 * 28 * 4))
    grid = chat_batch(processor, two_images)["image_grid_thw"]
    assert (grid.prod(-1) // 4 <= 4).all()  # at most 4 merged tokens per image
    processor.save_pretrained(tmp_path)  # the budget is saved with the processor
    saved = json.loads((tmp_path / "processor_config.json").read_text())["image_processor"]["size"]
    assert saved["longest_edge"] == 28 * 28 * 4 and saved["shortest_edge"] == 56 * 56


def test_dtype_and_attention(tiny_model_dirs):
    model, _, _ = load_model_and_processor(config_for(tiny_model_dirs["qwen2_vl"], dtype="bfloat16"))
    assert next(model.parameters()).dtype == torch.bfloat16
    assert model.config._attn_implementation == "sdpa"
    model, _, _ = load_model_and_processor(config_for(tiny_model_dirs["qwen2_vl"], attn_implementation="eager"))
    assert model.config._attn_implementation == "eager"


def test_flash_attention_without_the_package_is_a_user_error(tiny_model_dirs):
    import importlib.util

    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    with pytest.raises(UserError, match="flash-attn"):
        load_model_and_processor(config_for(tiny_model_dirs["qwen2_vl"], attn_implementation="flash_attention_2"))


def test_freeze_vision_keeps_merger_trainable(tiny_model_dirs, family, two_images):
    model, processor, _ = load_model_and_processor(config_for(tiny_model_dirs[family], freeze_vision=True))
    groups = parameter_groups(model)
    assert groups["vision"] and all(not p.requires_grad for _, p in groups["vision"])
    backward(model, processor, two_images)
    assert not any(p.grad is not None for _, p in groups["vision"])
    assert has_grad(groups["merger"]) and has_grad(groups["language"])


def test_freeze_merger(tiny_model_dirs, two_images):
    model, processor, _ = load_model_and_processor(config_for(tiny_model_dirs["qwen3_vl"], freeze_merger=True))
    groups = parameter_groups(model)
    # Qwen3-VL's DeepStack mergers are mergers too
    assert any("deepstack_merger_list" in name for name, _ in groups["merger"])
    backward(model, processor, two_images)
    assert not any(p.grad is not None for _, p in groups["merger"])
    assert has_grad(groups["vision"]) and has_grad(groups["language"])


def test_lora_wraps_only_language_modules(tiny_model_dirs, family, two_images):
    model, processor, _ = load_model_and_processor(config_for(tiny_model_dirs[family], lora=True, lora_r=4))
    lora_names = [name for name, _ in model.named_modules() if name.endswith("lora_A")]
    assert lora_names and all(".language_model." in name for name in lora_names)
    assert not any(name.endswith("lora_A") for name, _ in vision_tower(model).named_modules())
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    backward(model, processor, two_images)
    assert all(p.grad is not None for name, p in model.named_parameters() if "lora_B" in name)


def test_lora_vision_adds_vision_adapters(tiny_model_dirs):
    model, _, _ = load_model_and_processor(config_for(tiny_model_dirs["qwen2_5_vl"], lora=True, lora_vision=True))
    names = [name for name, _ in model.named_modules() if name.endswith("lora_A")]
    assert any(".visual.blocks." in name for name in names) and any(".language_model." in name for name in names)
    assert not any(".merger." in name for name in names)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model_dirs, two_images):
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)  # the same LoRA initialisation both times
        config = config_for(
            tiny_model_dirs["qwen2_5_vl"], gradient_checkpointing=checkpointing, lora=True, lora_r=4, lora_dropout=0.0
        )
        model, processor, _ = load_model_and_processor(config)
        assert base_model(model).is_activation_checkpointing == checkpointing
        backward(model, processor, two_images)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-5)
