"""Phases 1-2 of a GRPO step: draw this process's samples, roll out G completions each, score them.

The G completions of one sample are one contiguous `Group`. One generation per step: every usable sample of this
process's share goes to the rollout backend at once (the HF sampler prefills each prompt once and decodes all B x G
rows together, in chunks of `rollout.generation_batch_size` prompts when set; a vLLM backend gets all requests at
once). The sampling RNG of a sample is seeded from (`training.seed`, the sample's position in the stream), so its
completions depend neither on the number of processes, nor on a resume, nor on the other samples of the batch.
`group_rows` turns any rows of the step's groups into model inputs for the log-prob passes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from mmrl.data.manifest import SampleError
from mmrl.models.inputs import ROW_KEYS
from mmrl.models.prompts import load_image, prompt_inputs
from mmrl.rewards.compose import score_completions
from mmrl.rl import algo
from mmrl.rl.dist import all_reduce, any_process, engine_name, generation_model, max_over_processes, timed
from mmrl.rollout.hf import Rollout, generate_completions


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
    sampling_logps: torch.Tensor | None = None  # (G, T): the sampler's log-probs (vLLM: its importance correction)

    @property
    def zero_spread(self) -> bool:
        return bool(algo.group_advantages(self.rewards, len(self.rewards), "none").zero_spread.item())


@dataclass
class Prepared:
    """A sample ready to roll out: its image, its prompt row on the device, its sampling seed."""

    sample: Any
    image: Any
    prompt: dict[str, torch.Tensor]
    seed: int


def sample_seed(seed: int, position: int) -> int:
    """The sampling seed of the sample at `position` in the stream: independent of process count and resume."""
    return (seed * 1_000_003 + position * 7_919 + 17) % (2**62)


def prepare(run: Any, sample: Any, position: int) -> Prepared:
    """Image, prompt and seed of one sample; raises SampleError when it can't be used."""
    cfg = run.config
    try:
        image = load_image(sample, run.manifest.root, cfg.data)
    except (OSError, ValueError) as err:
        raise SampleError(str(err)) from None
    prompt = prompt_inputs(run.processor, [sample], [image], cfg.data)
    if prompt["input_ids"].shape[1] > cfg.rollout.max_prompt_length:  # never cut: that would cut image tokens
        raise SampleError(f"sample {sample.id}: prompt of {prompt['input_ids'].shape[1]} tokens is too long")
    prompt = {k: v.to(run.device) for k, v in prompt.items()}
    return Prepared(sample, image, prompt, sample_seed(cfg.training.seed, position))


def stack_prompts(prompts: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Prompt rows as one batch: left-padded to the longest, with their images' patches and grids in row order."""
    width = max(p["input_ids"].shape[1] for p in prompts)

    def left_pad(key: str, value: int) -> torch.Tensor:
        return torch.cat([torch.nn.functional.pad(p[key], (width - p[key].shape[1], 0), value=value) for p in prompts])

    batch = {key: left_pad(key, pad_id if key == "input_ids" else 0) for key in ROW_KEYS if key in prompts[0]}
    batch["pixel_values"] = torch.cat([p["pixel_values"] for p in prompts])  # (patches of the rows, D)
    batch["image_grid_thw"] = torch.cat([p["image_grid_thw"] for p in prompts])  # (rows, 3)
    return batch


def generate(run: Any, model: Any, items: list[Prepared]) -> list[Rollout]:
    """G completions for each prepared sample, one Rollout each, from the configured backend."""
    cfg, G = run.config, run.config.rollout.num_generations
    if run.vllm is not None:  # vLLM (server or colocated) samples every group, seeded the same way
        return [] if not items else run.vllm.generate_groups(
            [i.sample for i in items], [i.image for i in items], [i.prompt["input_ids"] for i in items], G,
            [i.seed for i in items],
        )  # fmt: skip
    # the plain reference path (share_prompt off) makes one generate call (one random stream) per sample
    size = (cfg.rollout.generation_batch_size or max(len(items), 1)) if cfg.rollout.share_prompt else 1
    chunks = [items[start : start + size] for start in range(0, len(items), size)]
    synced = engine_name(run.accelerator) == "fsdp"  # every forward is a collective: the processes go in step
    if synced and any_process(run.accelerator, not chunks):
        raise RuntimeError("FSDP: a process has no usable sample in its share of this step (see the warnings)")
    calls = max_over_processes(run.accelerator, len(chunks)) if synced else len(chunks)
    rollouts: list[Rollout] = []
    for k in range(calls):  # a process with fewer chunks repeats its last one, and drops what it gives
        chunk = chunks[min(k, len(chunks) - 1)]
        batch = stack_prompts([i.prompt for i in chunk], run.pad_token_id)
        seeds = [i.seed for i in chunk]
        rollout = generate_completions(model, run.processor, batch, G, cfg.rollout, seeds=seeds, synced=synced)
        if k < len(chunks):
            rollouts += rollout.split()
    return rollouts


def make_groups(run: Any, model: Any, items: list[Prepared]) -> list[Group]:
    """Roll out every prepared sample in one generation, then score each group."""
    cfg = run.config  # with no item, generate still joins the processes' collectives (FSDP)
    with timed(run.timers, "generate"):
        rollouts = generate(run, model, items)
    groups = []
    with timed(run.timers, "rewards"):
        for item, rollout in zip(items, rollouts, strict=True):
            n = len(rollout.texts)
            scores = score_completions(rollout.texts, [item.sample] * n, cfg.rewards, run.frame)
            groups.append(Group(
                item.sample, item.image, item.prompt, rollout.completion_ids, rollout.completion_mask,
                rollout.texts, rollout.truncated, torch.tensor(scores.total, dtype=torch.float32), scores.terms,
                rollout.sampling_logps,
            ))  # fmt: skip
    return groups


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
        items = []
        for offset, index in enumerate(run.stream.next_batch(cfg.training.batch_size)):
            try:
                items.append(prepare(run, run.manifest.samples[index], first + offset))
            except SampleError as err:
                skipped += 1
                warnings.warn(f"skipping a sample: {err}", stacklevel=1)
        with generation_model(run.model, acc) as model:
            groups = make_groups(run, model, items)
        for group in groups:
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
    inputs = stack_prompts([groups[r // num_generations].prompt for r in rows], pad_id)
    completions = [groups[r // num_generations] for r in rows]
    length = max(g.completion_ids.shape[1] for g in completions)

    def right_pad(tensor: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(tensor, (0, length - tensor.shape[0]), value=value)

    pairs = [(g, r % num_generations) for g, r in zip(completions, rows, strict=True)]
    ids = torch.stack([right_pad(g.completion_ids[i], pad_id) for g, i in pairs])  # (rows, T)
    mask = torch.stack([right_pad(g.completion_mask[i], 0) for g, i in pairs])
    batch = {"prompt_inputs": inputs, "completion_ids": ids.to(run.device), "completion_mask": mask.to(run.device)}
    if getattr(run, "vllm", None) is not None and run.config.rollout.importance_correction:
        # the vLLM sampler's log-probs, for its mismatch correction in the loss
        batch["sampling_logps"] = torch.stack([right_pad(g.sampling_logps[i], 0) for g, i in pairs]).to(run.device)
    return batch
