"""Phases 1-2 of a GRPO step: draw this process's samples, roll out G completions each, score them.

The G completions of one sample are one contiguous `Group`. The sampling RNG of a sample is seeded from
(`training.seed`, the sample's position in the stream), so completions depend neither on the number of processes
nor on a resume. `group_rows` turns any rows of the step's groups into model inputs for the log-prob passes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from trl.models.utils import unwrap_model_for_generation

from mmrl.data.manifest import SampleError
from mmrl.models.prompts import load_image, prompt_inputs
from mmrl.rewards.compose import score_completions
from mmrl.rl import algo
from mmrl.rl.dist import all_reduce, any_process, timed
from mmrl.rollout.hf import generate_completions


@dataclass
class Group:
    """The G completions of one sample, with its prompt (one row) and rewards."""

    sample: Any
    image: Any
    prompt: dict[str, torch.Tensor]  # one unpadded prompt row: input_ids (1, P), pixel_values, image_grid_thw, ...
    completion_ids: torch.Tensor  # (G, T)
    completion_mask: torch.Tensor  # (G, T)
    texts: list[str]
    truncated: torch.Tensor  # (G,)
    rewards: torch.Tensor  # (G,)
    terms: dict[str, list[float | None]] = field(default_factory=dict)

    @property
    def zero_spread(self) -> bool:
        return bool(algo.group_advantages(self.rewards, len(self.rewards), "none").zero_spread.item())


def sample_seed(seed: int, position: int) -> int:
    """The sampling seed of the sample at `position` in the stream: independent of process count and resume."""
    return (seed * 1_000_003 + position * 7_919 + 17) % (2**62)


def make_group(run: Any, model: Any, sample: Any, position: int) -> Group:
    """Prompt, G sampled completions and rewards of one sample; raises SampleError when it can't be used."""
    cfg = run.config
    try:
        image = load_image(sample, run.manifest.root, cfg.data)
    except (OSError, ValueError) as err:
        raise SampleError(str(err)) from None
    prompt = prompt_inputs(run.processor, [sample], [image], cfg.data)
    if prompt["input_ids"].shape[1] > cfg.rollout.max_prompt_length:  # never cut: that would cut image tokens
        raise SampleError(f"sample {sample.id}: prompt of {prompt['input_ids'].shape[1]} tokens is too long")
    prompt = {k: v.to(run.device) for k, v in prompt.items()}
    seed = sample_seed(cfg.training.seed, position)
    with timed(run.timers, "generate"), torch.random.fork_rng(devices=_rng_devices(run.device)):
        torch.manual_seed(seed)
        if run.vllm is not None:  # a vLLM server samples the group, seeded the same way
            rollout = run.vllm.generate(sample, image, prompt["input_ids"], cfg.rollout.num_generations, seed)
        else:
            rollout = generate_completions(model, run.processor, prompt, cfg.rollout.num_generations, cfg.rollout)
    with timed(run.timers, "rewards"):
        scores = score_completions(rollout.texts, [sample] * len(rollout.texts), cfg.rewards, run.frame)
    return Group(
        sample, image, prompt, rollout.completion_ids, rollout.completion_mask, rollout.texts, rollout.truncated,
        torch.tensor(scores.total, dtype=torch.float32), scores.terms,
    )  # fmt: skip


def _rng_devices(device: torch.device) -> list[torch.device]:
    return [device] if device.type == "cuda" else []


def collect_groups(run: Any) -> tuple[list[Group], dict[str, float]]:
    """This process's groups for one step: draw, roll out, score; with drop_zero_spread, drop and refill."""
    cfg, acc = run.config, run.accelerator
    need = cfg.training.batch_size // acc.num_processes
    kept: list[Group] = []
    spare: list[Group] = []  # zero-spread groups, used only if a process would otherwise have none
    generated = zero_spread = skipped = 0
    rounds = 1 + (cfg.grpo.max_refill_rounds if cfg.grpo.drop_zero_spread else 0)
    for _ in range(rounds):
        first = run.stream.position + acc.process_index * need
        indices = run.stream.next_batch(cfg.training.batch_size)
        # ZeRO-3 gathers the sharded weights for generation here; DDP just unwraps (and gradient checkpointing,
        # which would drop the generation cache, is off inside)
        with unwrap_model_for_generation(run.model, acc) as model:
            if run.vllm is not None:  # send the share's requests at once: the server batches them
                run.vllm.prefetch(run, indices, first, sample_seed)
            for offset, index in enumerate(indices):
                try:
                    group = make_group(run, model, run.manifest.samples[index], first + offset)
                except SampleError as err:
                    skipped += 1
                    warnings.warn(f"skipping a sample: {err}", stacklevel=1)
                    continue
                generated += 1
                zero_spread += group.zero_spread
                (spare if cfg.grpo.drop_zero_spread and group.zero_spread else kept).append(group)
        missing = max(need - len(kept), 0) if cfg.grpo.drop_zero_spread else (need if not kept else 0)
        if all_reduce(acc, torch.tensor([float(missing)]), "max").item() == 0:
            break
    kept = kept[:need] or spare[:1]
    if any_process(acc, not kept):
        raise RuntimeError("no usable sample in this step's batch on some process (see the warnings above)")
    return kept, {"groups_generated": generated, "groups_zero_spread": zero_spread, "samples_skipped": skipped}


def group_rows(run: Any, groups: list[Group], rows: list[int], num_generations: int) -> dict[str, Any]:
    """Model inputs for completion rows `rows` (row r = completion r % G of group r // G): each row's prompt,
    left-padded to the longest, with its image; completions right-padded to the longest."""
    pad_id = run.pad_token_id
    prompts = [groups[r // num_generations].prompt for r in rows]
    width = max(p["input_ids"].shape[1] for p in prompts)

    def left_pad(key: str, value: int) -> torch.Tensor:
        return torch.cat([torch.nn.functional.pad(p[key], (width - p[key].shape[1], 0), value=value) for p in prompts])

    inputs: dict[str, Any] = {
        "input_ids": left_pad("input_ids", pad_id),
        "attention_mask": left_pad("attention_mask", 0),
    }
    if "mm_token_type_ids" in prompts[0]:
        inputs["mm_token_type_ids"] = left_pad("mm_token_type_ids", 0)
    inputs["pixel_values"] = torch.cat([p["pixel_values"] for p in prompts])  # (patches of the rows, D)
    inputs["image_grid_thw"] = torch.cat([p["image_grid_thw"] for p in prompts])  # (rows, 3)
    completions = [groups[r // num_generations] for r in rows]
    length = max(g.completion_ids.shape[1] for g in completions)

    def right_pad(tensor: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(tensor, (0, length - tensor.shape[0]), value=value)

    pairs = [(g, r % num_generations) for g, r in zip(completions, rows, strict=True)]
    ids = torch.stack([right_pad(g.completion_ids[i], pad_id) for g, i in pairs])  # (rows, T)
    mask = torch.stack([right_pad(g.completion_mask[i], 0) for g, i in pairs])
    return {"prompt_inputs": inputs, "completion_ids": ids.to(run.device), "completion_mask": mask.to(run.device)}
