"""Rollout: sample G completions per prompt, as contiguous groups, with their masks, texts and sampling log-probs.

Built: each prompt (and its images) is repeated G times (`repeat_prompt_inputs`, the same helper the log-prob
function uses, so rows line up) and one `model.generate` call samples every row. Sampling stops at `<|im_end|>` or
`<|endoftext|>`; the completion mask covers the tokens up to and including that stop token, and nothing after it.
The image-pad, video-pad and vision start/end tokens are suppressed: a sampled image-pad token would claim image
features that do not exist. The log-probs seen while sampling come from the raw logits divided by the temperature,
the same quantity `completion_logprobs` computes (top-k/top-p filtering and suppression are not in it), so for
fp32 they equal a recomputation to ~1e-6.

With `rollout_config.share_prompt` (DESIGN.md, "The group shares its prompt"), `generate_shared` runs instead: one
prefill of the B prompts (vision encoder included), then the cache is expanded to B*G rows
(`batch_repeat_interleave`), the model's M-RoPE offsets (`rope_deltas`) likewise, and the decode loop passes explicit
3-row `position_ids` (a cached forward without them crashes or, with stale offsets, is silently wrong). It samples
with transformers' own logits processors; its log-probs equal a recomputation by `completion_logprobs` to ~1e-6
and, at a near-zero temperature, its tokens equal the plain path's (tests/models/test_shared_rollout.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from mmrl.models.inputs import repeat_prompt_inputs
from mmrl.models.loading import base_model

STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
SUPPRESSED_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


@dataclass
class Rollout:
    """G completions for each of B prompts; row b*G + g is completion g of prompt b."""

    completion_ids: torch.Tensor  # (B*G, T), pad after the stop token
    completion_mask: torch.Tensor  # (B*G, T), 1 up to and including the stop token
    texts: list[str]  # B*G decoded completions, special tokens dropped
    sampling_logps: torch.Tensor  # (B*G, T), log-probs at sampling time (masked positions 0)
    truncated: torch.Tensor  # (B*G,), True where no stop token came within max_completion_length
    num_generations: int


def token_ids(processor: Any, tokens: tuple[str, ...]) -> list[int]:
    """Ids of `tokens` in the processor's tokenizer; a token it lacks is an error, not a silent skip."""
    tokenizer = getattr(processor, "tokenizer", processor)
    ids = []
    for token in tokens:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no token {token!r}")
        ids.append(int(token_id))
    return ids


def completion_mask_from_ids(completion_ids: torch.Tensor, stop_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask (B, T) that is 1 up to and including the first stop token, truncated (B,) where none came)."""
    is_stop = torch.isin(completion_ids, torch.tensor(stop_ids, device=completion_ids.device))  # (B, T)
    has_stop = is_stop.any(dim=1)
    length = completion_ids.shape[1]
    first_stop = torch.where(
        has_stop, is_stop.int().argmax(dim=1), torch.full_like(has_stop, length - 1, dtype=torch.long)
    )
    positions = torch.arange(length, device=completion_ids.device).expand_as(completion_ids)
    return (positions <= first_stop.unsqueeze(1)).long(), ~has_stop


def generation_kwargs(processor: Any, rollout_config: Any) -> dict[str, Any]:
    """Sampling arguments for `model.generate` from the rollout config."""
    stop_ids = token_ids(processor, STOP_TOKENS)
    return {
        "do_sample": True,
        "temperature": rollout_config.temperature,
        "top_p": rollout_config.top_p,
        "top_k": rollout_config.top_k if rollout_config.top_k > 0 else None,
        "max_new_tokens": rollout_config.max_completion_length,
        "eos_token_id": stop_ids,
        "pad_token_id": stop_ids[-1],
        "suppress_tokens": token_ids(processor, SUPPRESSED_TOKENS),
        "use_cache": True,
    }


def _sampling_logps(logits: tuple[torch.Tensor, ...], completion_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    rows = []
    for step, step_logits in enumerate(logits):  # each (B*G, V)
        logp = torch.log_softmax(step_logits.float() / temperature, dim=-1)
        rows.append(logp.gather(-1, completion_ids[:, step : step + 1]).squeeze(-1))
    return torch.stack(rows, dim=1)  # (B*G, T)


def finish_rollout(
    processor: Any, completion_ids: torch.Tensor, sampling_logps: torch.Tensor, num_generations: int
) -> Rollout:
    """Mask after the first stop token, pad there, decode: the part shared by the plain and shared-prompt paths."""
    stop_ids = token_ids(processor, STOP_TOKENS)
    mask, truncated = completion_mask_from_ids(completion_ids, stop_ids)
    completion_ids = completion_ids.masked_fill(mask == 0, stop_ids[-1])
    tokenizer = getattr(processor, "tokenizer", processor)
    texts = [
        tokenizer.decode(row[m.bool()], skip_special_tokens=True) for row, m in zip(completion_ids, mask, strict=True)
    ]
    return Rollout(completion_ids, mask, texts, sampling_logps.masked_fill(mask == 0, 0.0), truncated, num_generations)


@torch.no_grad()
def generate_completions(
    model: Any,
    processor: Any,
    prompt_inputs: Mapping[str, torch.Tensor],
    num_generations: int,
    rollout_config: Any,
) -> Rollout:
    """Sample `num_generations` completions for each prompt row of `prompt_inputs` (B rows -> B*G completions).

    `rollout_config` needs temperature, top_p, top_k (0: off), max_completion_length and share_prompt (True: the
    shared-prompt path, one prefill per prompt). The model runs in eval mode with its cache for the duration
    (gradient checkpointing would drop the cache) and is put back in the mode it was in.
    """
    was_training = model.training
    model.eval()
    try:
        if getattr(rollout_config, "share_prompt", False):
            completion_ids, logps = _sample_shared(model, processor, prompt_inputs, num_generations, rollout_config)
            return finish_rollout(processor, completion_ids, logps, num_generations)
        inputs = repeat_prompt_inputs(model, prompt_inputs, num_generations)
        prompt_length = inputs["input_ids"].shape[1]
        out = model.generate(
            **inputs, **generation_kwargs(processor, rollout_config), output_logits=True, return_dict_in_generate=True
        )
    finally:
        model.train(was_training)
    completion_ids = out.sequences[:, prompt_length:]  # (B*G, T)
    logps = _sampling_logps(out.logits, completion_ids, rollout_config.temperature)
    return finish_rollout(processor, completion_ids, logps, num_generations)


def _logits_processors(processor: Any, rollout_config: Any) -> Any:
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        SuppressTokensLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    # the order generate() applies them in: processors, then temperature, top-k, top-p
    steps = [SuppressTokensLogitsProcessor(token_ids(processor, SUPPRESSED_TOKENS))]
    if rollout_config.temperature != 1.0:
        steps.append(TemperatureLogitsWarper(rollout_config.temperature))
    if rollout_config.top_k > 0:
        steps.append(TopKLogitsWarper(rollout_config.top_k))
    if rollout_config.top_p < 1.0:
        steps.append(TopPLogitsWarper(rollout_config.top_p))
    return LogitsProcessorList(steps)


def _sample_shared(
    model: Any, processor: Any, prompt_inputs: Mapping[str, torch.Tensor], num_generations: int, rollout_config: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """(completion_ids (B*G, T), sampling log-probs (B*G, T)) with each prompt prefilled once for its group."""

    group = num_generations
    stop_ids = torch.tensor(token_ids(processor, STOP_TOKENS))
    pad_id = int(stop_ids[-1])
    processors = _logits_processors(processor, rollout_config)
    prefill = model(**prompt_inputs, use_cache=True)
    cache = prefill.cache
    cache.batch_repeat_interleave(group)  # (B*G, heads, P, d) per layer
    inner = base_model(model).model
    rope_deltas = inner.rope_deltas.repeat_interleave(group, dim=0)  # (B*G, 1)
    inner.rope_deltas = rope_deltas  # keep the model's stored offsets consistent with the expanded cache
    mask = prompt_inputs["attention_mask"].repeat_interleave(group, dim=0)  # (B*G, P)
    logits = prefill.logits[:, -1, :].float().repeat_interleave(group, dim=0)  # (B*G, V)
    sequence = prompt_inputs["input_ids"].repeat_interleave(group, dim=0)  # what the processors may look at
    finished = torch.zeros(mask.shape[0], dtype=torch.bool, device=mask.device)
    tokens, logps = [], []
    for step in range(rollout_config.max_completion_length):
        scores = processors(sequence, logits)
        next_tokens = torch.multinomial(torch.softmax(scores, dim=-1), 1).squeeze(1)  # (B*G,)
        next_tokens = next_tokens.masked_fill(finished, pad_id)
        logps.append(torch.log_softmax(logits / rollout_config.temperature, dim=-1).gather(-1, next_tokens[:, None]))
        tokens.append(next_tokens)
        finished = finished | torch.isin(next_tokens, stop_ids.to(next_tokens.device))
        if finished.all() or step == rollout_config.max_completion_length - 1:
            break
        sequence = torch.cat([sequence, next_tokens[:, None]], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)  # (B*G, P+t+1)
        # the new token's text position counts the real tokens before it; M-RoPE adds the prompt's offset
        position = (mask.sum(-1, keepdim=True) - 1) + rope_deltas  # (B*G, 1)
        out = model(
            input_ids=next_tokens[:, None],
            attention_mask=mask,
            position_ids=position.unsqueeze(0).expand(3, -1, -1),  # (3, B*G, 1)
            cache=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1, :].float()
    return torch.stack(tokens, dim=1), torch.cat(logps, dim=1)  # (B*G, T), (B*G, T)
