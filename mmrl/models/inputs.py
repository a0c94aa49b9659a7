"""Model inputs built from the processor's prompt tensors: which images belong to which prompt row, a prompt
repeated for its G completions, and prompt + completion as one sequence.

Prompt inputs (a dict, as the processor returns it): `input_ids` (B, P), `attention_mask` (B, P), `pixel_values`
(patches, D), `image_grid_thw` (images, 3), and `mm_token_type_ids` (B, P) when the processor gives it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

# per-row tensors (B, P) that extend over the completion; the rest are per-image
ROW_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")


def _tokens_per_image(model: Any, image_grid_thw: torch.Tensor) -> list[int]:
    merge = _spatial_merge_size(model)
    return (image_grid_thw.prod(-1) // (merge * merge)).tolist()


def _spatial_merge_size(model: Any) -> int:
    config = getattr(model, "config", None)
    vision = getattr(config, "vision_config", None)
    return int(getattr(vision, "spatial_merge_size", 2))


def _image_token_id(model: Any) -> int:
    return int(model.config.image_token_id)


def image_spans(model: Any, prompt_inputs: Mapping[str, torch.Tensor]) -> list[tuple[int, int]]:
    """For each prompt row, the range [first, end) of its images in `image_grid_thw`.

    Images are assigned to rows in order, by counting each row's image-pad tokens against each image's token count.
    """
    image_tokens = _tokens_per_image(model, prompt_inputs["image_grid_thw"])
    pad_counts = (prompt_inputs["input_ids"] == _image_token_id(model)).sum(-1).tolist()
    spans, image = [], 0
    for count in pad_counts:
        first = image
        while count > 0:
            count -= image_tokens[image]
            image += 1
        if count != 0:
            raise ValueError("image-pad tokens of a prompt row do not match its images' token counts")
        spans.append((first, image))
    return spans


def repeat_prompt_inputs(model: Any, prompt_inputs: Mapping[str, torch.Tensor], repeats: int) -> dict[str, Any]:
    """Each prompt row repeated `repeats` times (contiguously), with its images' patches and grids."""
    out: dict[str, Any] = dict(prompt_inputs)
    if repeats == 1:
        return out
    for key in ROW_KEYS:
        if key in prompt_inputs:
            out[key] = prompt_inputs[key].repeat_interleave(repeats, dim=0)  # (B*G, P)
    grid = prompt_inputs.get("image_grid_thw")
    pixels = prompt_inputs.get("pixel_values")
    if grid is None or pixels is None:
        return out
    patch_chunks = list(torch.split(pixels, grid.prod(-1).tolist(), dim=0))
    new_pixels, new_grid = [], []
    for first, end in image_spans(model, prompt_inputs):
        for _ in range(repeats):
            new_pixels.extend(patch_chunks[first:end])
            new_grid.append(grid[first:end])
    out["pixel_values"] = torch.cat(new_pixels, dim=0)  # (patches*G, D)
    out["image_grid_thw"] = torch.cat(new_grid, dim=0)  # (images*G, 3)
    return out


def full_sequence_inputs(
    model: Any, prompt_inputs: Mapping[str, torch.Tensor], completion_ids: torch.Tensor, completion_mask: torch.Tensor
) -> dict[str, Any]:
    """Model inputs for prompt + completion: ids, mask and mm_token_type_ids concatenated; image inputs kept."""
    num_prompts, num_rows = prompt_inputs["input_ids"].shape[0], completion_ids.shape[0]
    if num_rows % num_prompts:
        raise ValueError(f"{num_rows} completion rows are not a whole number of groups of {num_prompts} prompts")
    inputs = repeat_prompt_inputs(model, prompt_inputs, num_rows // num_prompts)
    completion_mask = completion_mask.to(inputs["attention_mask"].dtype)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], completion_ids], dim=1)  # (B*G, P+T)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], completion_mask], dim=1)
    if "mm_token_type_ids" in inputs:
        mm = inputs["mm_token_type_ids"]
        inputs["mm_token_type_ids"] = torch.cat([mm, mm.new_zeros(completion_ids.shape)], dim=1)
    return inputs
