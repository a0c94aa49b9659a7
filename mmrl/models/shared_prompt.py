"""The shared-prompt log-prob pass: each distinct prompt (and its images) is computed once for all its completions.

DESIGN.md, "The group shares its prompt". The plain pass repeats every prompt, vision tower included, once per
completion row. Here:

1. `unique_prompts` finds the distinct prompts behind the completion rows: the caller may give B prompts for B*k
   rows (each prompt repeated k times, as the rollout does) or one prompt per row (as the trainer's micro-batches
   do); consecutive identical prompts (same tokens, mask, image patches and grids) are merged, so a micro-batch
   holding whole groups, part of a group, or the tails of two groups computes each sample's prompt once. Left-pad
   columns that every distinct prompt has are dropped (M-RoPE positions count real tokens only, so this is exact).
2. One forward of the U distinct prompts (vision tower included) with the cache on; only the last position's
   logits are kept: they predict the first completion token.
3. The cache is expanded to the N completion rows by index (`batch_select_indices`, differentiable: gradients of
   the N rows sum into the shared prompt), and so are the model's stored M-RoPE offsets (`rope_deltas` on the
   inner model).
4. One forward of the completion tokens but the last against the expanded cache, with explicit 3-row
   `position_ids`: completion token t sits at text position (real prompt tokens) + t, plus the prompt's M-RoPE
   offset (a cached forward without them crashes or, with stale offsets, is silently wrong).

The result equals the plain repeated computation (log-probs and gradients, fp32, ~1e-6:
tests/models/test_shared_logprobs.py). Gradient checkpointing (DESIGN.md: it drops the cache): in a forward that
records gradients, the prompt pass runs without it (full activations, but of U prompts, not N rows), and the
completion pass runs with it against a read-only view of the expanded cache (each layer returns past + new keys and
values without storing them), so the backward's replay of a layer sees the same cache and appends nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from mmrl.models.inputs import ROW_KEYS, image_spans
from mmrl.models.loading import base_model


def checkpointed_modules(model: Any) -> list[Any]:
    """The modules whose gradient checkpointing acts in this forward (training mode, gradients on); else none."""
    if not (model.training and torch.is_grad_enabled()):
        return []
    return [module for module in model.modules() if getattr(module, "gradient_checkpointing", False) is True]


@contextmanager
def _checkpointing_off(modules: list[Any]) -> Iterator[None]:
    for module in modules:
        module.gradient_checkpointing = False
    try:
        yield
    finally:
        for module in modules:
            module.gradient_checkpointing = True


def _layers_can_keep_cache() -> bool:
    # transformers' checkpointed layers drop the cache unless this flag (newer 5.x releases) says otherwise
    from transformers.modeling_layers import GradientCheckpointingLayer

    return hasattr(GradientCheckpointingLayer, "_can_checkpoint_with_cache")


@contextmanager
def _checkpoint_with_cache(modules: list[Any]) -> Iterator[None]:
    # the layers keep the cache under checkpointing; safe only because the cache they get is read-only
    for module in modules:
        module._can_checkpoint_with_cache = True
    try:
        yield
    finally:
        for module in modules:
            del module._can_checkpoint_with_cache  # back to the class's False


def _read_only(cache: Any) -> bool:
    """Make each layer of a DynamicCache return past + new keys/values without storing them (False: not one).

    A checkpointed layer runs again in the backward pass; a cache that appended would hold the completion twice.
    """
    from transformers.cache_utils import DynamicLayer

    class ReadOnlyLayer(DynamicLayer):
        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
            return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)

    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return False
    for layer in layers:
        layer.__class__ = ReadOnlyLayer
    return True


def unique_prompts(
    model: Any, prompt_inputs: Mapping[str, torch.Tensor], num_rows: int
) -> tuple[dict[str, Any], torch.Tensor]:
    """(the U distinct prompts as model inputs, index (num_rows,) of each completion row's prompt among them).

    `model` is the HF model itself (`mmrl.models.loading.base_model`): its config says the image token and merge size.
    """
    num_prompts = prompt_inputs["input_ids"].shape[0]
    if num_rows % num_prompts:
        raise ValueError(f"{num_rows} completion rows are not a whole number of groups of {num_prompts} prompts")
    pixels, grid = prompt_inputs.get("pixel_values"), prompt_inputs.get("image_grid_thw")
    spans = image_spans(model, prompt_inputs) if grid is not None and pixels is not None else None
    if spans is not None:
        offsets = [0, *torch.cumsum(grid.prod(-1), 0).tolist()]  # patch offset of each image
        patch_chunks = [pixels[offsets[first] : offsets[end]] for first, end in spans]

    def same(a: int, b: int) -> bool:
        keys = [key for key in ROW_KEYS if key in prompt_inputs]
        if not all(torch.equal(prompt_inputs[key][a], prompt_inputs[key][b]) for key in keys):
            return False
        if spans is None:
            return True
        (a0, a1), (b0, b1) = spans[a], spans[b]
        return (
            torch.equal(grid[a0:a1], grid[b0:b1])
            and patch_chunks[a].shape == patch_chunks[b].shape
            and torch.equal(patch_chunks[a], patch_chunks[b])
        )

    keep, prompt_of_row = [0], [0]
    for b in range(1, num_prompts):
        if not same(keep[-1], b):
            keep.append(b)
        prompt_of_row.append(len(keep) - 1)
    device = prompt_inputs["input_ids"].device
    index = torch.tensor(prompt_of_row, device=device).repeat_interleave(num_rows // num_prompts)  # (N,)
    rows = torch.tensor(keep, device=device)
    unique: dict[str, Any] = dict(prompt_inputs)
    mask = prompt_inputs["attention_mask"][rows]
    start = int((mask.sum(0) > 0).int().argmax())  # the first column any distinct prompt uses
    for key in ROW_KEYS:
        if key in prompt_inputs:
            unique[key] = prompt_inputs[key][rows][:, start:]  # (U, P')
    if spans is not None:
        unique["pixel_values"] = torch.cat([patch_chunks[b] for b in keep])  # (patches of U prompts, D)
        unique["image_grid_thw"] = torch.cat([grid[spans[b][0] : spans[b][1]] for b in keep])  # (images, 3)
        if unique["image_grid_thw"].shape[0] == 0:  # the distinct prompts are text only
            del unique["pixel_values"], unique["image_grid_thw"]
    return unique, index


def shared_completion_logits(
    model: Any, prompt_inputs: Mapping[str, torch.Tensor], completion_ids: torch.Tensor, completion_mask: torch.Tensor
) -> torch.Tensor | None:
    """Logits (N, T, V) at the positions that predict each of the N rows' T completion tokens.

    None (the caller takes the plain path) only under gradient checkpointing where the cache cannot be kept
    read-only: a cache that is not a plain DynamicCache (e.g. sliding-window layers), or a transformers release
    whose checkpointed layers always drop the cache.
    """
    num_rows, length = completion_ids.shape
    hf_model = base_model(model)  # its config and stored offsets; the forwards go through `model` (DDP, PEFT)
    unique, index = unique_prompts(hf_model, prompt_inputs, num_rows)
    inner = hf_model.model
    checkpointed = checkpointed_modules(model)
    if checkpointed and not _layers_can_keep_cache():
        return None
    with _checkpointing_off(checkpointed):  # full activations, but of the U prompts only
        prefill = model(**unique, use_cache=True, logits_to_keep=1)
    first = prefill.logits[:, -1, :][index].unsqueeze(1)  # (N, 1, V): predicts completion token 0
    if length == 1:
        return first
    cache = prefill.cache
    if checkpointed and not _read_only(cache):
        return None
    cache.batch_select_indices(index)  # (N, heads, P', d) per layer; the backward sums the rows into the prompt
    rope_deltas = inner.rope_deltas[index]  # (N, 1)
    inner.rope_deltas = rope_deltas  # the model's stored offsets match the expanded cache
    prompt_mask = unique["attention_mask"][index]  # (N, P')
    mask = torch.cat([prompt_mask, completion_mask[:, :-1].to(prompt_mask.dtype)], dim=1)  # (N, P'+T-1)
    steps = torch.arange(length - 1, device=completion_ids.device)
    position = prompt_mask.sum(-1, keepdim=True) + steps + rope_deltas  # (N, T-1)
    with _checkpoint_with_cache(checkpointed):
        out = model(
            input_ids=completion_ids[:, :-1],
            attention_mask=mask,
            position_ids=position.unsqueeze(0).expand(3, -1, -1),  # (3, N, T-1)
            cache=cache,
            use_cache=True,
        )
    return torch.cat([first, out.logits], dim=1)  # (N, T, V)
