"""Rollout: sample G completions per prompt, as contiguous groups, with their masks, texts and sampling log-probs.

Default (`rollout_config.share_prompt`, DESIGN.md "The group shares its prompt"): one generation for all B prompts
of a step. The B prompts (vision encoder included) are prefilled once, keeping only the last position's logits;
the cache is expanded to B*G rows (`batch_repeat_interleave`), the model's M-RoPE offsets (`rope_deltas`) likewise,
and all B*G rows decode together with explicit 3-row `position_ids` (a cached forward without them crashes or, with
stale offsets, is silently wrong). On a GPU decoding is bound by memory bandwidth, so one batch of B*G rows costs
about what one of G rows does. Per-prompt `seeds` give each group its own random stream: group b draws its tokens
with `torch.multinomial` on its G rows from a generator seeded with `seeds[b]`, the draws a lone
`torch.manual_seed(seeds[b])` generation of that prompt makes, so a prompt's completions do not depend on which
other prompts share the batch (tests/models/test_rollout_batched.py: same tokens, log-probs to 1e-5). The host
learns whether every row has stopped only every few tokens on a GPU (a sync drains the launch queue); the extra
steps decode padding and are cut off.

Plain path (`share_prompt` off, the reference): each prompt (and its images) is repeated G times
(`repeat_prompt_inputs`, the helper the log-prob function uses, so rows line up) and `model.generate` samples.

Both stop at `<|im_end|>` or `<|endoftext|>`; the completion mask covers the tokens up to and including that stop
token. The image-pad, video-pad and vision start/end tokens are suppressed: a sampled image-pad token would claim
image features that do not exist. `generation_kwargs` is the one place these settings live (evaluation's greedy
decoding uses it too). The sampling log-probs are the raw logits divided by the temperature, what
`completion_logprobs` computes (filtering and suppression are not in it), so for fp32 they equal a recomputation to
~1e-6. Texts keep the special tokens the model wrote, so Qwen's `<|box_start|>(x1,y1),(x2,y2)<|box_end|>` reaches
the box parser; only the stop token is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from mmrl.models.inputs import repeat_prompt_inputs
from mmrl.models.loading import base_model

STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
SUPPRESSED_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
GPU_STOP_CHECK_EVERY = 8  # decode steps between host checks of "has every row stopped?" on an accelerator


@dataclass
class Rollout:
    """G completions for each of B prompts; row b*G + g is completion g of prompt b."""

    completion_ids: torch.Tensor  # (B*G, T), pad after the stop token
    completion_mask: torch.Tensor  # (B*G, T), 1 up to and including the stop token
    texts: list[str]  # B*G decoded completions, stop token dropped
    sampling_logps: torch.Tensor  # (B*G, T), log-probs at sampling time (masked positions 0)
    truncated: torch.Tensor  # (B*G,), True where no stop token came within max_completion_length
    num_generations: int

    def split(self) -> list[Rollout]:
        """One Rollout per prompt, each cut to its own longest completion (as a lone generation of it would be)."""
        G, parts = self.num_generations, []
        for start in range(0, self.completion_ids.shape[0], G):
            rows = slice(start, start + G)
            width = max(int(self.completion_mask[rows].sum(-1).max()), 1)
            parts.append(Rollout(
                self.completion_ids[rows, :width], self.completion_mask[rows, :width], self.texts[rows],
                self.sampling_logps[rows, :width], self.truncated[rows], G,
            ))  # fmt: skip
        return parts


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


def generation_kwargs(processor: Any, max_new_tokens: int, sampling: Any = None) -> dict[str, Any]:
    """Arguments for `model.generate`: stop and pad ids, suppressed vision tokens, and greedy decoding, or sampling
    with `sampling`'s temperature, top_p and top_k (0: off) when a rollout config is given."""
    stop_ids = token_ids(processor, STOP_TOKENS)
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens, "eos_token_id": stop_ids, "pad_token_id": stop_ids[-1],
        "suppress_tokens": token_ids(processor, SUPPRESSED_TOKENS), "use_cache": True,
        "do_sample": False, "temperature": None, "top_p": None, "top_k": None,
    }  # fmt: skip
    if sampling is not None:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                      top_k=sampling.top_k if sampling.top_k > 0 else None)  # fmt: skip
    return kwargs


def decode_completions(processor: Any, completion_ids: torch.Tensor, completion_mask: torch.Tensor) -> list[str]:
    """Each row's text up to its stop token (dropped). Other special tokens stay: skipping them would drop Qwen's
    `<|box_start|>`/`<|box_end|>` (special in the released tokenizers) and the grounding reward would miss the box."""
    tokenizer = getattr(processor, "tokenizer", processor)
    stop = set(token_ids(processor, STOP_TOKENS))
    rows = zip(completion_ids.tolist(), completion_mask.tolist(), strict=True)
    return [tokenizer.decode([t for t, m in zip(row, mask, strict=True) if m and t not in stop]) for row, mask in rows]


def _sampling_logps(logits: tuple[torch.Tensor, ...], completion_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    rows = []
    for step, step_logits in enumerate(logits):  # each (B*G, V)
        logp = torch.log_softmax(step_logits.float() / temperature, dim=-1)
        rows.append(logp.gather(-1, completion_ids[:, step : step + 1]).squeeze(-1))
    return torch.stack(rows, dim=1)  # (B*G, T)


def finish_rollout(
    processor: Any, completion_ids: torch.Tensor, sampling_logps: torch.Tensor, num_generations: int
) -> Rollout:
    """Mask after the first stop token, pad there, decode: the part shared by every backend."""
    stop_ids = token_ids(processor, STOP_TOKENS)
    mask, truncated = completion_mask_from_ids(completion_ids, stop_ids)
    completion_ids = completion_ids.masked_fill(mask == 0, stop_ids[-1])
    texts = decode_completions(processor, completion_ids, mask)
    return Rollout(completion_ids, mask, texts, sampling_logps.masked_fill(mask == 0, 0.0), truncated, num_generations)


@torch.no_grad()
def generate_completions(
    model: Any,
    processor: Any,
    prompt_inputs: Mapping[str, torch.Tensor],
    num_generations: int,
    rollout_config: Any,
    seeds: list[int] | None = None,
    synced: bool = False,
) -> Rollout:
    """Sample `num_generations` completions for each prompt row of `prompt_inputs` (B rows -> B*G completions).

    `synced`: every process of the default process group decodes until all processes' rows have stopped (FSDP: each
    forward is a collective, so a process that stopped early would leave the others waiting forever); a process whose
    rows stopped keeps decoding padding, which the masks drop. transformers' `generate` does the same (`synced_gpus`).

    `rollout_config` needs temperature, top_p, top_k (0: off), max_completion_length and share_prompt. `seeds` (one
    per prompt) seeds each prompt's group on its own; without them the global RNG draws. The plain path takes seeds
    for a single prompt only (`model.generate` has one random stream). The model runs in eval mode with its cache for
    the duration (gradient checkpointing would drop the cache) and is put back in the mode it was in.
    """
    num_prompts = prompt_inputs["input_ids"].shape[0]
    if seeds is not None and len(seeds) != num_prompts:
        raise ValueError(f"{len(seeds)} seeds for {num_prompts} prompts")
    shared = getattr(rollout_config, "share_prompt", False)
    if seeds is not None and not shared and num_prompts != 1:
        raise ValueError("the plain path (share_prompt off) seeds one prompt per call")
    was_training = model.training
    model.eval()
    try:
        if shared:
            completion_ids, logps = _sample_shared(
                model, processor, prompt_inputs, num_generations, rollout_config, seeds, synced
            )
            return finish_rollout(processor, completion_ids, logps, num_generations)
        inputs = repeat_prompt_inputs(model, prompt_inputs, num_generations)
        prompt_length = inputs["input_ids"].shape[1]
        kwargs = generation_kwargs(processor, rollout_config.max_completion_length, rollout_config)
        seeded = seeds is not None
        with torch.random.fork_rng(devices=_rng_devices(inputs["input_ids"].device)) if seeded else nullcontext():
            if seeded:
                torch.manual_seed(seeds[0])
            out = model.generate(
                **inputs, **kwargs, output_logits=True, return_dict_in_generate=True, synced_gpus=synced
            )
    finally:
        model.train(was_training)
    completion_ids = out.sequences[:, prompt_length:]  # (B*G, T)
    logps = _sampling_logps(out.logits, completion_ids, rollout_config.temperature)
    return finish_rollout(processor, completion_ids, logps, num_generations)


def _rng_devices(device: torch.device) -> list[torch.device]:
    return [device] if device.type == "cuda" else []


def _logits_processors(kwargs: Mapping[str, Any]) -> Any:
    """transformers' own processors for `generation_kwargs`' sampling settings, in the order generate() applies them:
    suppression, then temperature, top-k, top-p."""
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        SuppressTokensLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    steps = [SuppressTokensLogitsProcessor(kwargs["suppress_tokens"])]
    if kwargs["temperature"] != 1.0:
        steps.append(TemperatureLogitsWarper(kwargs["temperature"]))
    if kwargs["top_k"]:
        steps.append(TopKLogitsWarper(kwargs["top_k"]))
    if kwargs["top_p"] < 1.0:
        steps.append(TopPLogitsWarper(kwargs["top_p"]))
    return LogitsProcessorList(steps)


def _sample_shared(
    model: Any,
    processor: Any,
    prompt_inputs: Mapping[str, torch.Tensor],
    num_generations: int,
    rollout_config: Any,
    seeds: list[int] | None,
    synced: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(completion_ids (B*G, T), sampling log-probs (B*G, T)): each prompt prefilled once, all rows decoded together."""
    group = num_generations
    kwargs = generation_kwargs(processor, rollout_config.max_completion_length, rollout_config)
    processors = _logits_processors(kwargs)
    temperature, max_tokens = kwargs["temperature"], kwargs["max_new_tokens"]
    device = prompt_inputs["input_ids"].device
    stop_ids = torch.tensor(kwargs["eos_token_id"], device=device)
    pad_id = kwargs["pad_token_id"]
    generators = None if seeds is None else [torch.Generator(device=device).manual_seed(s) for s in seeds]
    check_every = 1 if device.type == "cpu" else GPU_STOP_CHECK_EVERY
    prefill = model(**prompt_inputs, use_cache=True, logits_to_keep=1)
    cache = prefill.cache
    cache.batch_repeat_interleave(group)  # (B*G, heads, P, d) per layer
    inner = base_model(model).model
    rope_deltas = inner.rope_deltas.repeat_interleave(group, dim=0)  # (B*G, 1)
    inner.rope_deltas = rope_deltas  # keep the model's stored offsets consistent with the expanded cache
    prompt_mask = prompt_inputs["attention_mask"].repeat_interleave(group, dim=0)  # (B*G, P)
    mask = torch.cat([prompt_mask, prompt_mask.new_ones(prompt_mask.shape[0], max_tokens)], dim=1)  # (B*G, P+T)
    text_position = prompt_mask.sum(-1, keepdim=True) + rope_deltas  # (B*G, 1): completion token 0's position
    logits = prefill.logits[:, -1, :].float().repeat_interleave(group, dim=0)  # (B*G, V)
    # none of these processors reads the sequence so far, only the scores
    no_sequence = prompt_inputs["input_ids"][:, :0].repeat_interleave(group, dim=0)
    finished = torch.zeros(mask.shape[0], dtype=torch.bool, device=device)
    tokens, logps = [], []
    for step in range(max_tokens):
        probs = torch.softmax(processors(no_sequence, logits), dim=-1)
        if generators is None:
            next_tokens = torch.multinomial(probs, 1).squeeze(1)  # (B*G,)
        else:  # each group from its own stream: the draws a lone, seeded generation of that prompt makes
            groups = zip(probs.split(group), generators, strict=True)
            draws = [torch.multinomial(rows, 1, generator=gen) for rows, gen in groups]
            next_tokens = torch.cat(draws).squeeze(1)
        next_tokens = next_tokens.masked_fill(finished, pad_id)
        logps.append(torch.log_softmax(logits / temperature, dim=-1).gather(-1, next_tokens[:, None]))
        tokens.append(next_tokens)
        finished = finished | torch.isin(next_tokens, stop_ids)
        if step == max_tokens - 1 or ((step + 1) % check_every == 0 and _all_stopped(finished, synced)):
            break
        out = model(
            input_ids=next_tokens[:, None],
            attention_mask=mask[:, : prompt_mask.shape[1] + step + 1],
            position_ids=(text_position + step).unsqueeze(0).expand(3, -1, -1),  # (3, B*G, 1)
            cache=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1, :].float()
    completion_ids, logps = torch.stack(tokens, dim=1), torch.cat(logps, dim=1)  # (B*G, T), (B*G, T)
    return _trim_finished(completion_ids, logps, stop_ids)


def _all_stopped(finished: torch.Tensor, synced: bool) -> bool:
    """Whether every row has stopped: on this process, or (synced) on every process of the default group."""
    done = finished.all()
    if synced and torch.distributed.is_initialized():
        flag = done.to(torch.int32)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item())
    return bool(done)


def _trim_finished(ids: torch.Tensor, logps: torch.Tensor, stop_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut the columns decoded after every row had stopped (the steps between the host's stop checks)."""
    stopped = torch.isin(ids, stop_ids).int().cumsum(1)  # (B*G, T): > 0 from each row's first stop on
    live = (stopped == 0) | ((stopped == 1) & torch.isin(ids, stop_ids))  # up to and including the first stop
    width = int(live.any(0).nonzero().max()) + 1
    return ids[:, :width], logps[:, :width]
