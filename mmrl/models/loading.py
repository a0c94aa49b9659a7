"""Loading a Qwen-VL model and its processor as a `ModelConfig` asks, and finding its parts.

`load_model_and_processor(model_config)` returns `(model, processor, family)`:
- builds the tiny model first when `name_or_path` is neither a folder nor a cached hub model and `tiny_family` is
  set explicitly (off by default); otherwise such a path is one error line when it cannot be a hub id or the hub
  is offline, never a silently built toy model;
- detects the family from the HF config's `model_type` (qwen2_vl, qwen2_5_vl, qwen3_vl);
- sets the processor's pixel budget (min/max pixels), the dtype and the attention implementation (sdpa by default;
  flash_attention_2 only when flash-attn is importable), and passes `trust_remote_code` only when asked;
- freezes the vision tower and/or the merger, wraps the model in LoRA (language-model modules only unless
  `lora_vision`), and turns on gradient checkpointing (non-reentrant, so frozen inputs need no grad hook).

Module names (transformers 5.x, all three families): `model.visual` is the vision tower, holding the merger as
`model.visual.merger` (and Qwen3-VL's DeepStack mergers as `model.visual.deepstack_merger_list`);
`model.language_model` is the decoder and `lm_head` the output head (tied to the embeddings in the tiny models).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from mmrl.errors import UserError
from mmrl.models.tiny import build_tiny_model
from mmrl.types import FAMILIES

# parameter-name prefixes inside `model.visual` that are the merger (vision -> language projection)
MERGER_PREFIXES = ("merger.", "deepstack_merger_list.")
# linear layers of the vision blocks, by family naming (used only when LoRA also adapts the vision tower)
VISION_LORA_TARGETS = ("qkv", "proj", "fc1", "fc2", "linear_fc1", "linear_fc2", "gate_proj", "up_proj", "down_proj")


def detect_family(config: Any) -> str:
    """The mmrl family name of an HF config (its `model_type`); an unsupported type is a UserError."""
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise UserError(f"unsupported model type {model_type!r} (supported: {', '.join(FAMILIES)})")
    return model_type


def base_model(model: Any) -> Any:
    """The HF `...ForConditionalGeneration` inside PEFT / DDP / DeepSpeed wrappers."""
    while True:
        if hasattr(model, "get_base_model"):  # peft
            model = model.get_base_model()
        elif hasattr(model, "module") and not hasattr(getattr(model, "config", None), "model_type"):
            model = model.module  # DDP, DeepSpeed (whose `config` is its own dict), accelerate wrappers
        else:
            return model


def vision_tower(model: Any) -> Any:
    """The vision encoder module (`model.visual`), merger included."""
    return base_model(model).model.visual


def language_model(model: Any) -> Any:
    """The text decoder module (`model.language_model`), without the output head."""
    return base_model(model).model.language_model


def parameter_groups(model: Any) -> dict[str, list[tuple[str, Any]]]:
    """Named parameters split into `vision` (tower without merger), `merger` and `language` (the rest).

    Names are as `model.named_parameters()` gives them (with the PEFT prefix when wrapped), so the trainer can build
    optimizer groups (e.g. the vision tower at a lower learning rate) from the same names it sees.
    """
    visual = vision_tower(model)
    merger_ids = {id(p) for name, p in visual.named_parameters() if name.startswith(MERGER_PREFIXES)}
    vision_ids = {id(p) for p in visual.parameters()} - merger_ids
    groups: dict[str, list[tuple[str, Any]]] = {"vision": [], "merger": [], "language": []}
    for name, param in model.named_parameters():
        key = "merger" if id(param) in merger_ids else "vision" if id(param) in vision_ids else "language"
        groups[key].append((name, param))
    return groups


def image_pad_token_id(processor: Any) -> int:
    """The id of `<|image_pad|>`, the placeholder the processor expands into one token per merged image patch."""
    token_id = getattr(processor, "image_token_id", None)
    if token_id is None:
        token_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    return int(token_id)


def set_pixel_budget(processor: Any, min_pixels: int, max_pixels: int) -> None:
    """Images are resized so their area lies in [min_pixels, max_pixels]; saved with the processor."""
    from transformers.image_utils import SizeDict

    processor.image_processor.size = SizeDict(shortest_edge=min_pixels, longest_edge=max_pixels)


def _is_cached_hub_model(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def resolve_model_path(model_config: Any) -> str:
    """The folder or hub id to load; builds the tiny model there first when it is missing and `tiny_family` is set."""
    name = model_config.name_or_path
    if Path(name).exists() or _is_cached_hub_model(name):
        return name
    if model_config.tiny_family is not None:  # asked for explicitly: never a default (no silent toy model)
        print(
            f"mmrl: building a tiny {model_config.tiny_family} model in {name} (model.tiny_family is set)",
            file=sys.stderr,
        )
        build_tiny_model(model_config.tiny_family, name)
        return name
    if _offline() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise UserError(
            f"model {name!r} is neither a folder nor a cached hub model"
            + (" (the hub is offline here: HF_HUB_OFFLINE)" if _offline() else "")
            + "; download it first, or make a tiny one with `mmrl tiny-model --family F --out DIR`"
        )
    return name  # a hub id that from_pretrained downloads; its failure is reported by load_model_and_processor


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _attn_implementation(name: str) -> str:
    if name == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise UserError(
            "model.attn_implementation=flash_attention_2 needs the flash-attn package (pip install 'mmrl[gpu]'); "
            "use sdpa otherwise"
        )
    return name


def apply_freezing(model: Any, freeze_vision: bool, freeze_merger: bool) -> None:
    """requires_grad off for the vision tower (merger excluded) and/or the merger."""
    groups = parameter_groups(model)
    for key, frozen in (("vision", freeze_vision), ("merger", freeze_merger)):
        if frozen:
            for _, param in groups[key]:
                param.requires_grad_(False)


def lora_target_regex(target_modules: list[str], lora_vision: bool) -> str:
    """A PEFT target regex (matched against full module names) restricted to the language model, plus the vision
    blocks when `lora_vision` (the vision tower's MLPs share names like gate_proj with the decoder's)."""
    language = rf"model\.language_model\..*\.({'|'.join(target_modules)})"
    if not lora_vision:
        return language
    vision = rf"model\.visual\.blocks\..*\.({'|'.join(VISION_LORA_TARGETS)})"
    return rf"({language})|({vision})"


def apply_lora(model: Any, model_config: Any) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=model_config.lora_r,
        lora_alpha=model_config.lora_alpha,
        lora_dropout=model_config.lora_dropout,
        target_modules=lora_target_regex(list(model_config.lora_target_modules), model_config.lora_vision),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def enable_checkpointing(model: Any) -> None:
    """Activation checkpointing of every decoder and vision block, non-reentrant (frozen inputs need no hook)."""
    base = base_model(model)
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def load_model_and_processor(model_config: Any) -> tuple[Any, Any, str]:
    """(model, processor, family) as `model_config` (an `mmrl.config.schema.ModelConfig`) asks; model in train mode."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    path = resolve_model_path(model_config)
    remote = bool(model_config.trust_remote_code)
    try:
        hf_config = AutoConfig.from_pretrained(path, trust_remote_code=remote)
    except OSError as err:
        raise UserError(f"cannot load model {path!r}: {str(err).splitlines()[0]}") from None
    family = detect_family(hf_config)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=remote)
    set_pixel_budget(processor, model_config.min_pixels, model_config.max_pixels)
    model = AutoModelForImageTextToText.from_pretrained(
        path,
        dtype={"float32": torch.float32, "bfloat16": torch.bfloat16}[model_config.dtype],
        attn_implementation=_attn_implementation(model_config.attn_implementation),
        trust_remote_code=remote,
    )
    apply_freezing(model, model_config.freeze_vision, model_config.freeze_merger)
    if model_config.lora:
        model = apply_lora(model, model_config)
    if model_config.gradient_checkpointing:
        enable_checkpointing(model)
    model.train()
    return model, processor, family
