"""The one log-prob function: policy, old policy and reference log-probs all come from `completion_logprobs`.

One forward over prompt + completion with the prompt's image inputs (DESIGN.md principle 6: a reference that
forgets the images gives a wrong KL). Prompts are left-padded, completions right-padded. `mm_token_type_ids`
(the processor's marker of image tokens) is extended with zeros over the completion: without it Qwen2-VL and
Qwen3-VL raise and Qwen2.5-VL silently computes wrong M-RoPE positions. Only the logits of the completion positions
are computed (`logits_to_keep`), so memory grows with the completion, not with the image.

Prompt inputs (a dict, as the processor returns it): `input_ids` (B, P), `attention_mask` (B, P), `pixel_values`
(patches, D), `image_grid_thw` (images, 3), and `mm_token_type_ids` (B, P) when the processor gives it. A batch of B
prompts serves B*G completion rows: `repeat_prompt_inputs` repeats each prompt G times, images included, so the
G completions of one sample form a contiguous block. With `share_prompt`, `mmrl.models.shared_prompt` computes each
distinct
prompt once instead (DESIGN.md, "The group shares its prompt").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mmrl.models.inputs import full_sequence_inputs
from mmrl.models.shared_prompt import shared_completion_logits


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[..., index] without materialising the full log-softmax in fp32 at once."""
    if logits.dtype in (torch.float32, torch.float64):
        picked = torch.gather(logits, -1, index.unsqueeze(-1)).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)
    # half precision: logsumexp loses too much; go row by row in fp32
    rows = [torch.log_softmax(row.float(), dim=-1).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
            for row, idx in zip(logits, index, strict=True)]  # fmt: skip
    return torch.stack(rows)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dimension."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def completion_logprobs(
    model: Any,
    prompt_inputs: Mapping[str, torch.Tensor],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
    return_entropy: bool = False,
    share_prompt: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs (B*G, T) of `completion_ids` under `model` at `temperature`; masked positions are 0.

    `prompt_inputs` holds B prompts (left-padded) and `completion_ids` (B*G, T) their completions (right-padded,
    `completion_mask` 1 on real tokens, EOS included). With `return_entropy`, also the entropies (B*G, T).
    Gradients flow when called outside `torch.no_grad()`.

    With `share_prompt`, each distinct prompt is computed once (vision tower included) and its completions against
    its cache (`mmrl.models.shared_prompt`, gradient checkpointing included): the same numbers, less work.
    """
    logits = None
    if share_prompt:
        logits = shared_completion_logits(model, prompt_inputs, completion_ids, completion_mask)  # (B*G, T, V)
    if logits is None:
        inputs = full_sequence_inputs(model, prompt_inputs, completion_ids, completion_mask)
        # the logit at position i predicts token i+1: keep the T+1 last positions and drop the very last
        outputs = model(**inputs, use_cache=False, logits_to_keep=completion_ids.shape[1] + 1)
        logits = outputs.logits[:, :-1, :]  # (B*G, T, V)
    if temperature != 1.0:
        logits = logits / temperature
    mask = completion_mask.bool()
    logps = selective_log_softmax(logits, completion_ids).masked_fill(~mask, 0.0)  # (B*G, T)
    if not return_entropy:
        return logps
    with torch.no_grad():
        entropy = entropy_from_logits(logits).masked_fill(~mask, 0.0)  # (B*G, T)
    return logps, entropy
