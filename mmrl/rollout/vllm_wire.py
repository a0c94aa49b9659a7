"""What the vLLM backends (server and colocated) share: the server's pixel budget as it reports it, the check that
the engine's prompt is mmrl's own, and the sampled token ids and log-probs turned into a `Rollout`."""

from __future__ import annotations

from typing import Any

import torch

from mmrl.errors import UserError
from mmrl.rollout.hf import Rollout, finish_rollout, token_ids


def find_key(tree: Any, key: str) -> Any:
    """The first value under `key` anywhere in a JSON tree (depth first), or None."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        children = tree.values()
    elif isinstance(tree, list):
        children = tree
    else:
        return None
    for child in children:
        found = find_key(child, key)
        if found is not None:
            return found
    return None


def pixel_budget(mm_processor_kwargs: dict[str, Any] | None) -> tuple[int | None, int | None]:
    """(min_pixels, max_pixels) from a server's processor kwargs, in either spelling Qwen-VL processors take.

    >>> pixel_budget({"min_pixels": 3136, "max_pixels": 1003520})
    (3136, 1003520)
    >>> pixel_budget({"size": {"shortest_edge": 3136, "longest_edge": 1003520}}), pixel_budget(None)
    ((3136, 1003520), (None, None))
    """
    kwargs = mm_processor_kwargs or {}
    size = kwargs.get("size") or {}
    return kwargs.get("min_pixels", size.get("shortest_edge")), kwargs.get("max_pixels", size.get("longest_edge"))


def check_prompt(processor: Any, sample_id: str, ours: list[int], theirs: list[int] | None) -> None:
    """The engine's prompt token ids must equal mmrl's (same chat template, same number of image tokens)."""
    if theirs == ours:
        return
    pad = token_ids(processor, ("<|image_pad|>",))[0]
    seen = "no prompt token ids (vLLM >= 0.10.2 returns them)" if theirs is None else (
        f"{len(theirs)} tokens, {theirs.count(pad)} image tokens")  # fmt: skip
    raise UserError(
        f"sample {sample_id}: the vLLM engine's prompt differs from mmrl's ({len(ours)} tokens, {ours.count(pad)} "
        f"image tokens; vLLM: {seen}). Serve the same model folder (chat template) with mmrl's pixel budget"
    )


def to_rollout(
    processor: Any,
    completions: list[list[int]],
    logps: list[list[float]] | None,
    num_generations: int,
    max_tokens: int,
    device: torch.device,
) -> Rollout:
    """G sampled completions (token ids, and the sampler's log-probs of them or None) as a Rollout.

    A completion that ended before `max_tokens` without a stop token stopped on one the engine left out of its token
    ids: the stop token is put back, so the mask covers it as on the HF path. Missing log-probs are NaN (the
    sampler correction then leaves those tokens alone)."""
    if len(completions) != num_generations:
        raise RuntimeError(f"vLLM returned {len(completions)} completions, asked for {num_generations}")
    stop_ids = token_ids(processor, ("<|im_end|>", "<|endoftext|>"))
    rows, row_logps = [], []
    for k, ids in enumerate(completions):
        ids = [int(t) for t in ids]
        values = [float(v) for v in logps[k]] if logps is not None else []
        if len(ids) < max_tokens and not set(ids) & set(stop_ids):
            ids.append(stop_ids[0])
        rows.append(ids or [stop_ids[-1]])
        row_logps.append((values + [float("nan")] * len(rows[-1]))[: len(rows[-1])])
    width = max(len(r) for r in rows)
    completion_ids = torch.tensor([r + [stop_ids[-1]] * (width - len(r)) for r in rows], dtype=torch.long)
    sampling = torch.tensor([lp + [0.0] * (width - len(lp)) for lp in row_logps], dtype=torch.float32)
    rollout = finish_rollout(processor, completion_ids, sampling, num_generations)
    return Rollout(
        rollout.completion_ids.to(device), rollout.completion_mask.to(device), rollout.texts,
        rollout.sampling_logps.to(device), rollout.truncated.to(device), num_generations,
    )  # fmt: skip
