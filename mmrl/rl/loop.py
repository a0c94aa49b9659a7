"""GRPO training: `mmrl train CONFIG [key=value ...] [--max-steps N] [--output-dir DIR]`.

The algorithm, as built (one step; every process runs it on its own slice of the global batch):

1. rollout: take `training.batch_size` samples (global; each of P processes takes batch_size / P, contiguous) from
   a resumable shuffled stream over the manifest. Open each sample's image and render its chat prompt (a sample
   whose image is unreadable or whose prompt exceeds `rollout.max_prompt_length` is skipped and counted), then
   sample G = `rollout.num_generations` completions for every sample in one generation (`mmrl.rl.groups`: each
   prompt prefilled once, all B x G rows decoded together; temperature, top-p, top-k; image-pad token suppressed;
   stop at <|im_end|>), or from vLLM (`rollout.backend`). Each group draws from its own RNG seeded from
   (`training.seed`, the sample's position in the stream), so the completions depend neither on the number of
   processes, nor on how the step's prompts are batched, nor on a resume. The G completions of a sample are one
   contiguous group.
2. rewards: `mmrl.rewards.compose.score_completions` gives each completion a total (weighted sum of terms) and
   its terms.
3. advantages: A = (r - group mean) / (std + 1e-4), std of the group, of the global batch, or no division
   (`grpo.scale_rewards`). With `grpo.drop_zero_spread`, groups whose rewards are all equal are dropped and more
   samples are drawn (up to `grpo.max_refill_rounds` more global batches) until each process has its share.
4. old / reference log-probs through `mmrl.models.logprobs.completion_logprobs` (the one log-prob function, images
   included): old ones only when `grpo.num_iterations` > 1 (otherwise the policy's own, detached); reference ones
   only when `grpo.beta` > 0 (a frozen copy of the initial model, or the LoRA model with its adapters off).
5. policy update, `grpo.num_iterations` times: per micro-batch of `training.micro_batch_size` completions, the
   clipped surrogate -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A) (rho per token, or per sequence for
   GSPO) plus beta * k3 KL, reduced by `grpo.loss_type` (see `mmrl.rl.algo`); gradients accumulate over the
   micro-batches (synchronised across processes only on the last), are clipped to `training.max_grad_norm`, and
   AdamW steps once (DeepSpeed: the engine steps once, at the accumulation boundary; `mmrl.rl.engine`); a
   non-finite loss or gradient norm skips the step on every process with a warning. The LR schedule (warm-up,
   then constant / linear / cosine) advances once per training step. With vLLM the loss of each token is weighted
   by the truncated importance ratio between trainer and sampler (`rollout.vllm_importance_sampling`).
6. log: metrics to the terminal, `metrics.jsonl`, TensorBoard (and W&B); every `logging.samples_steps` an HTML
   page of sampled completions; every `training.eval_steps` a greedy evaluation on `data.eval_manifest`, per variant.
7. checkpoint every `training.save_steps` and at the end (`mmrl.rl.engine`, `mmrl.io.checkpoint`: atomic,
   checksummed, every rank's state under DeepSpeed; `training.resume=auto` continues from the newest intact one,
   weights, optimizer, schedule, RNG and data position, exactly).
"""

from __future__ import annotations

import math
import time
import warnings

import torch
from tqdm import tqdm

from mmrl.config.loader import load_run_config, to_dict
from mmrl.config.schema import TrainConfig
from mmrl.io.logger import MetricsLogger
from mmrl.io.resume_guard import save_run_config
from mmrl.rl import algo
from mmrl.rl.dist import all_reduce, any_process, timed
from mmrl.rl.groups import collect_groups, group_rows
from mmrl.rl.report import evaluate, rollout_metrics, samples_page
from mmrl.rl.run import Run, save, setup
from mmrl.rl.update import fixed_logps, micro_batches, policy_update, reference_logps
from mmrl.rollout.vllm import sync_weights


def parse_args(argv: list[str]) -> TrainConfig:
    return load_run_config(TrainConfig, argv, "mmrl train", "GRPO training of a Qwen-VL model")


def main(argv: list[str]) -> int:
    config = parse_args(argv)  # a bad config fails here, before any model loads
    train(config)
    return 0


def train(config: TrainConfig) -> Run:
    """Run GRPO as `config` says; returns the finished run (its model, step and folder)."""
    run = setup(config)
    acc, cfg = run.accelerator, config
    if acc.is_main_process:
        save_run_config(config, run.run_dir, run.step)  # an earlier segment's different config is kept
    logger = MetricsLogger(
        run.run_dir, tensorboard=cfg.logging.tensorboard, wandb=cfg.logging.wandb,
        wandb_project=cfg.logging.wandb_project, config=to_dict(config), is_main_process=acc.is_main_process,
        resume_step=run.step,
    )  # fmt: skip
    if run.manifest.rejects and acc.is_main_process:
        line, reason = run.manifest.rejects[0]
        count = len(run.manifest.rejects)
        warnings.warn(f"{count} bad manifest lines skipped (first: line {line}: {reason})", stacklevel=1)
    progress = tqdm(total=cfg.training.max_steps, initial=run.step, disable=not acc.is_main_process, desc="grpo")
    saved_step = None
    while run.step < cfg.training.max_steps:
        metrics = step(run)
        if metrics is None:  # a non-finite reward: nothing to log or save for this step
            continue
        logger.log(run.step, metrics)
        progress.update(1)
        progress.set_postfix(reward=f"{metrics['reward']:.3f}", loss=f"{metrics['loss']:.4f}")
        if cfg.training.save_steps and run.step % cfg.training.save_steps == 0:  # 7. checkpoint
            save(run)
            saved_step = run.step
    progress.close()
    if saved_step != run.step:
        save(run)  # the end of the run, unless the loop just saved this step
    logger.close()
    acc.wait_for_everyone()
    return run


def step(run: Run) -> dict[str, float] | None:
    """One training step, phases 1-6 of the module docstring; returns its metrics (None: update skipped)."""
    acc, cfg, G = run.accelerator, run.config, run.config.rollout.num_generations
    start = time.perf_counter()
    run.timers = {"time/generate": 0.0, "time/rewards": 0.0}
    with timed(run.timers, "rollout"):  # 1-2. contiguous groups of G completions per sample, scored
        groups, counts = collect_groups(run)
    rewards = torch.cat([g.rewards for g in groups])  # (B*G,)
    if any_process(acc, not torch.isfinite(rewards).all()):
        warnings.warn(f"step {run.step + 1}: non-finite reward, update skipped", stacklevel=1)
        run.step += 1
        run.scheduler.step()
        return None
    with timed(run.timers, "advantages"):  # 3. per group (or over the global batch's std)
        advantages = step_advantages(run, rewards)
        chunks = micro_batches(len(rewards), cfg.training.micro_batch_size)
        batches = [group_rows(run, groups, rows, G) for rows in chunks]
        batch_advantages = [advantages[rows].to(run.device) for rows in chunks]
    with timed(run.timers, "logprobs"):  # 4. old-policy and reference log-probs, through the policy's function
        old = fixed_logps(run, run.model, batches) if cfg.grpo.num_iterations > 1 else None
        ref = reference_logps(run, batches) if cfg.grpo.beta > 0 else None
    with timed(run.timers, "update"):  # 5. accumulate over micro-batches, clip, AdamW (num_iterations times)
        update = policy_update(run, batches, batch_advantages, old, ref)
        run.scheduler.step()
        run.step += 1
    if run.vllm is not None:
        with timed(run.timers, "weight_sync"):  # the server samples the next step with the updated weights
            sync_weights(run, run.vllm)
    # 6. log
    metrics = {**rollout_metrics(run, groups, advantages, counts), **update, **run.timers}
    metrics.setdefault("kl", math.nan)  # beta = 0: no reference, the KL is not computed (null in the file)
    metrics["lr"] = run.scheduler.get_last_lr()[0]
    metrics["time/step"] = time.perf_counter() - start
    if cfg.logging.samples_steps and run.step % cfg.logging.samples_steps == 0 and acc.is_main_process:
        samples_page(run, groups, batch_advantages)
    eval_every = cfg.training.eval_steps or cfg.training.max_steps  # 0: only at the end
    if cfg.data.eval_manifest and (run.step % eval_every == 0 or run.step == cfg.training.max_steps):
        metrics.update(evaluate(run))
    return metrics


def step_advantages(run: Run, rewards: torch.Tensor) -> torch.Tensor:
    """Group-relative advantages (B*G,); with `scale_rewards: batch`, the std is the global batch's."""
    acc, cfg = run.accelerator, run.config
    batch_std = None
    if cfg.grpo.scale_rewards == "batch" and acc.num_processes > 1:
        stats = torch.stack([rewards.sum(), (rewards**2).sum(), torch.tensor(rewards.numel())]).double()
        total, squares, n = all_reduce(acc, stats).tolist()
        batch_std = torch.tensor(math.sqrt(max(squares - total * total / n, 0.0) / max(n - 1, 1)))
    G = cfg.rollout.num_generations
    return algo.group_advantages(rewards, G, cfg.grpo.scale_rewards, batch_std=batch_std).advantages
