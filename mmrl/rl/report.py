"""Phase 6 of a GRPO step: what the step logs (rollout statistics over the global batch), the greedy evaluation on
the held-out manifest, and the page of sampled completions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object

from mmrl.data.manifest import read_manifest
from mmrl.eval.evaluate import greedy_completions, score_rows
from mmrl.io.logger import SampleRow, mean_std, write_samples_page
from mmrl.models.prompts import load_image
from mmrl.rl.dist import all_reduce, generation_model
from mmrl.rl.groups import Group


def _gather(accelerator: Any, rows: list) -> list:
    return gather_object(rows) if accelerator.num_processes > 1 else rows


def rollout_metrics(run: Any, groups: list[Group], advantages: torch.Tensor, counts: dict[str, float]) -> dict:
    """Rewards, terms, advantages, lengths and counts over the global batch (gathered from every process)."""
    local = [
        {"reward": float(g.rewards[i]), "terms": {k: v[i] for k, v in g.terms.items()},
         "length": int(g.completion_mask[i].sum()), "truncated": bool(g.truncated[i])}
        for g in groups for i in range(len(g.texts))
    ]  # fmt: skip
    rows = _gather(run.accelerator, local)
    adv = _gather(run.accelerator, advantages.tolist())
    out: dict[str, float] = {}
    out["reward"], out["reward_std"] = mean_std(r["reward"] for r in rows)
    for name in run.config.rewards.terms:
        out[f"reward/{name}"], out[f"reward/{name}/std"] = mean_std(r["terms"].get(name) for r in rows)
    out["advantage/mean"], out["advantage/std"] = mean_std(adv)
    out["advantage/abs_mean"] = sum(abs(a) for a in adv) / max(len(adv), 1)
    lengths = [r["length"] for r in rows]
    out["completion_length/mean"] = sum(lengths) / len(lengths)
    out["completion_length/min"], out["completion_length/max"] = float(min(lengths)), float(max(lengths))
    out["completion_truncated"] = sum(r["truncated"] for r in rows) / len(rows)
    summed = all_reduce(run.accelerator, torch.tensor([counts[k] for k in sorted(counts)], dtype=torch.float64))
    counts = dict(zip(sorted(counts), summed.tolist(), strict=True))
    out["frac_zero_spread"] = counts["groups_zero_spread"] / max(counts["groups_generated"], 1.0)
    out["samples_skipped"] = counts["samples_skipped"]
    out["groups_generated"] = counts["groups_generated"]
    out["groups_used"] = len(rows) / run.config.rollout.num_generations
    return out


@torch.no_grad()
def evaluate(run: Any) -> dict[str, float]:
    """Greedy completions on the held-out manifest; mean reward and terms per variant (and over all).

    The one evaluation path: `mmrl eval` scores with the same `greedy_completions` and `score_rows`."""
    cfg, acc = run.config, run.accelerator
    manifest = read_manifest(cfg.data.eval_manifest)
    share, own = eval_share(len(manifest.samples), acc.process_index, acc.num_processes)
    mine = [manifest.samples[i] for i in share]
    rows = []
    with generation_model(run.model, acc) as model:
        for start in range(0, len(mine), cfg.training.batch_size):
            samples = mine[start : start + cfg.training.batch_size]
            images = [load_image(s, manifest.root, cfg.data) for s in samples]
            texts = greedy_completions(
                model, run.processor, samples, images, cfg.data, cfg.rollout.max_completion_length, len(samples),
                run.device,
            )  # fmt: skip
            scored = score_rows(texts, samples, cfg.rewards, run.frame)[: max(own - start, 0)]  # repeats dropped
            for r in scored:
                rows.append({"variant": r["variant"], "reward": r["reward"], **r["terms"], "accuracy": r["correct"],
                             "abstention_rate": r["abstained"], "format_rate": r["formatted"]})  # fmt: skip
    rows = _gather(acc, rows)
    out: dict[str, float] = {}
    for variant in sorted({r["variant"] for r in rows}) + ["all"]:
        chosen = [r for r in rows if variant in ("all", r["variant"])]
        for key in ["reward", *cfg.rewards.terms, "accuracy", "abstention_rate", "format_rate"]:
            out[f"eval/{variant}/{key}"] = mean_std(r.get(key) for r in chosen)[0]
    return out


def eval_share(num_samples: int, process_index: int, num_processes: int) -> tuple[list[int], int]:
    """(indices this process evaluates, how many of them are its own): every process gets the same number, so they
    run the same number of generation passes (FSDP's forwards are collectives); a short share repeats its last index
    (or index 0), and those repeats are not scored.

    >>> eval_share(5, 0, 2), eval_share(5, 1, 2), eval_share(1, 1, 2)
    (([0, 2, 4], 3), ([1, 3, 3], 2), ([0], 0))
    """
    own = list(range(process_index, num_samples, num_processes))
    size = -(-num_samples // num_processes)
    filler = own[-1] if own else 0
    return own + [filler] * (size - len(own)), len(own)


def samples_page(run: Any, groups: list[Group], advantages: list[torch.Tensor], max_rows: int = 32) -> Path:
    flat_adv = torch.cat(advantages).tolist()
    rows, r = [], 0
    for g in groups:
        for i, text in enumerate(g.texts):
            rows.append(SampleRow(
                g.sample.id, g.sample.variant.value, g.sample.question, g.sample.answer, text, float(g.rewards[i]),
                {k: v[i] for k, v in g.terms.items()}, flat_adv[r], g.image,
            ))  # fmt: skip
            r += 1
    return write_samples_page(run.run_dir, run.step, rows[:max_rows])
