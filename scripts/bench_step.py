"""Benchmark: one GRPO step of mmrl against TRL 1.16's GRPOTrainer, same model, data and settings, alternating.

    .venv/bin/python scripts/bench_step.py [--steps 5] [--warmup 1] [--batch 2] [--gpu] [--plain]

CPU (default): a random-initialised Qwen2.5-VL of hidden 256, 4 decoder layers (vision depth 2), 448x448 images at
a pixel budget of exactly 448*448 (256 merged visual tokens each), G = 8, 48-token completions, beta 0.04 (so both
compute reference log-probs), one iteration per rollout, `--batch` prompts a step (B*G completions in one
micro-batch on both sides). `--gpu` (needs CUDA): the same on a random-initialised Qwen2.5-VL of the 3B shape in
bf16 (hidden 2048, 36 layers, 32-block vision tower, 3.4B parameters with the tiny 1k vocabulary). Both trainers
live in one process, each with a policy, a reference and AdamW states: about 70 GiB before activations, so run it
on the H200 (or pass --beta 0 on an 80 GiB card: no reference models). Every run prints completion tokens per
second.

Both trainers get the same model folder, the same prompts and images (question and image, image first), the same
G, max completion length, learning rate, beta and num_iterations, and a reward of the same cost (exact match of
the answer). Fixed-length completions: the stop tokens `<|im_end|>` and `<|endoftext|>` are suppressed on both
sides, so every completion runs to max_completion_length (TRL: `generation_kwargs={"suppress_tokens": [...]}`; mmrl:
the same tokens added to `mmrl.rollout.hf.SUPPRESSED_TOKENS`, the list its sampler suppresses).

The steps alternate in one process: TRL's trainer runs its own loop, and a callback at the end of each of its steps
runs one mmrl step (and with `--plain` one with prompt sharing off, each sample generated on its own) with mmrl's
own phase functions (`mmrl.rl.groups.collect_groups`, one generation for the step's B prompts -> advantages ->
reference log-probs -> policy_update). TRL's step time is from its step begin to
its step end. Memory: the peak during each step above what was in use when it began; on CUDA from
torch.cuda.max_memory_allocated (reset before each step), on the CPU from the RSS (a sampling thread, 2 ms; the heap
is trimmed with malloc_trim first so freed memory does not hide a step's allocations), since both trainers live in
one process and the process's own peak covers both. On the CPU torch runs one thread: the machine's cores are
shared, and with more threads than free cores OpenMP barriers stall every small matmul.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mmrl.rollout.hf  # noqa: E402
from mmrl.config.loader import load_config  # noqa: E402
from mmrl.config.schema import TrainConfig  # noqa: E402
from mmrl.rl import algo  # noqa: E402
from mmrl.testing import shapes_image  # noqa: E402

G, COMPLETION, LR, BETA, PIXELS = 8, 48, 1e-5, 0.04, 448 * 448
QUESTIONS = [("What color is the circle?", "red"), ("What color is the square?", "blue")]
SHAPES_3B = {
    "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
    "num_key_value_heads": 2,
}  # fmt: skip
VISION_3B = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 2048}


def build_model(root: Path, gpu: bool) -> Path:
    from transformers import AutoConfig, AutoModelForImageTextToText

    from mmrl.models.tiny import build_tiny_model

    path = build_tiny_model("qwen2_5_vl", root / "model", hidden_size=256, num_layers=4, vision_depth=2)
    if gpu:  # the 3B shape, on the tiny model's tokenizer (its 1k vocabulary, not Qwen's 151k)
        config = json.loads((path / "config.json").read_text())
        text, vision = config["text_config"], config["vision_config"]
        text.update(SHAPES_3B, layer_types=["full_attention"] * SHAPES_3B["num_hidden_layers"])
        text["rope_parameters"]["mrope_section"] = [16, 24, 24]  # head_dim 128
        vision.update(VISION_3B, fullatt_block_indexes=[7, 15, 23, 31])
        (path / "config.json").write_text(json.dumps(config))
        torch.manual_seed(0)
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(path), dtype=torch.bfloat16)
        model.save_pretrained(path)
    return path


def build_data(root: Path, num: int) -> tuple[Path, list[dict]]:
    colors = ["red", "blue", "green", "yellow"]
    records, rows = [], []
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(num):
        question, _ = QUESTIONS[i % 2]
        answer = colors[i % 4]
        kind = "circle" if i % 2 == 0 else "square"
        image = shapes_image(448, 448, [(kind, answer, (40 + 9 * i, 60, 240 + 9 * i, 300))])
        image.save(root / "images" / f"{i}.png")
        records.append({"id": f"s{i}", "variant": "positive", "image": f"images/{i}.png", "image_size": [448, 448],
                        "question": question, "answer": answer})  # fmt: skip
        rows.append({"prompt": [{"role": "user", "content": question}], "image": image, "answer": answer})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    return manifest, rows


class Memory:
    """Peak memory of one step: CUDA peak allocated, or CPU peak RSS above the step's start (sampled)."""

    def __init__(self) -> None:
        import psutil

        self.process, self.cuda = psutil.Process(), torch.cuda.is_available()
        self.peak = self.start = 0
        self.running = False

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self) -> Memory:
        gc.collect()
        if not self.cuda and sys.platform.startswith("linux"):  # hand freed heap back, so RSS starts from what is live
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.start = self.peak = self.process.memory_info().rss
        self.cuda_start = torch.cuda.memory_allocated() if self.cuda else 0
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()
        if self.cuda:
            torch.cuda.synchronize()
            self.peak, self.start = torch.cuda.max_memory_allocated(), self.cuda_start

    @property
    def used_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def mmrl_config(model: Path, manifest: Path, out: Path, batch: int, gpu: bool, beta: float = BETA) -> TrainConfig:
    values = {
        "model.name_or_path": str(model), "model.min_pixels": PIXELS, "model.max_pixels": PIXELS,
        "model.dtype": "bfloat16" if gpu else "float32", "data.train_manifest": str(manifest),
        "data.template": "direct", "data.question_first": "false", "rewards.template": "direct",
        "rewards.terms": "{answer: 1.0}", "rollout.num_generations": G, "rollout.max_completion_length": COMPLETION,
        "rollout.max_prompt_length": 4096, "grpo.beta": beta, "grpo.num_iterations": 1, "grpo.loss_type": "grpo",
        "grpo.drop_zero_spread": "false",
        "training.batch_size": batch, "training.micro_batch_size": batch * G, "training.learning_rate": LR,
        "training.max_steps": 10**6, "training.resume": "never", "training.output_dir": str(out),
        "logging.tensorboard": "false", "logging.samples_steps": 0,
    }  # fmt: skip
    return load_config(TrainConfig, None, [f"{k}={v}" for k, v in values.items()])


def mmrl_step(run, share_prompt: bool) -> dict[str, float]:
    """One step of mmrl's loop (mmrl.rl.loop.step's phases 1-5), timed per phase."""
    from mmrl.rl.groups import collect_groups, group_rows
    from mmrl.rl.update import policy_update, reference_logps

    cfg = run.config
    cfg.rollout.share_prompt = share_prompt
    run.timers = {"time/generate": 0.0, "time/rewards": 0.0, "time/logprobs": 0.0, "time/update": 0.0}
    start = time.perf_counter()
    groups, _ = collect_groups(run)
    rewards = torch.cat([g.rewards for g in groups])
    advantages = algo.group_advantages(rewards, G, cfg.grpo.scale_rewards).advantages
    rows = list(range(len(rewards)))
    batches = [group_rows(run, groups, rows, G)]
    t0 = time.perf_counter()
    ref = reference_logps(run, batches) if cfg.grpo.beta > 0 else None
    run.timers["time/logprobs"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    policy_update(run, batches, [advantages.to(run.device)], None, ref)
    run.scheduler.step()
    run.timers["time/update"] = time.perf_counter() - t0
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    lengths = {int(g.completion_mask.sum(-1).min()) for g in groups} | {g.completion_ids.shape[1] for g in groups}
    assert lengths == {COMPLETION}, f"completions must all be {COMPLETION} tokens, got {lengths}"
    return {**run.timers, "time/step": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="measured steps of each trainer")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured steps first")
    parser.add_argument("--batch", type=int, default=2, help="prompts per step (B*G completions)")
    parser.add_argument("--gpu", action="store_true", help="the 3B-shaped bf16 model on CUDA")
    parser.add_argument("--beta", type=float, default=BETA, help="KL coefficient of both trainers (0: no reference)")
    parser.add_argument("--plain", action="store_true", help="also time mmrl with prompt sharing off (per sample)")
    args = parser.parse_args()
    if args.gpu and not torch.cuda.is_available():
        print("--gpu: no CUDA device here, skipped")
        return
    if not args.gpu:  # on shared, oversubscribed cores OpenMP barriers stall small matmuls by milliseconds each
        torch.set_num_threads(1)
    from datasets import Dataset
    from transformers import AutoProcessor, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from mmrl.models.loading import set_pixel_budget
    from mmrl.rl.run import setup
    from mmrl.rollout.hf import STOP_TOKENS

    mmrl.rollout.hf.SUPPRESSED_TOKENS = (*mmrl.rollout.hf.SUPPRESSED_TOKENS, *STOP_TOKENS)  # fixed-length completions
    root = Path(tempfile.mkdtemp(prefix="bench_step_"))
    model_path = build_model(root, args.gpu)
    total = args.warmup + args.steps
    manifest, rows = build_data(root / "data", max(8, 2 * args.batch * total))
    run = setup(mmrl_config(model_path, manifest, root / "mmrl", args.batch, args.gpu, args.beta))
    processor = AutoProcessor.from_pretrained(model_path)
    set_pixel_budget(processor, PIXELS, PIXELS)
    suppressed = [processor.tokenizer.convert_tokens_to_ids(t) for t in mmrl.rollout.hf.SUPPRESSED_TOKENS]

    def reward(completions, answer, **kwargs):
        return [float(c[0]["content"].strip().lower() == a) for c, a in zip(completions, answer, strict=True)]

    trl_args = GRPOConfig(
        output_dir=str(root / "trl"), num_generations=G, per_device_train_batch_size=args.batch * G,
        gradient_accumulation_steps=1, max_completion_length=COMPLETION, learning_rate=LR, beta=args.beta,
        num_iterations=1, loss_type="grpo", temperature=1.0, max_steps=total, logging_steps=10**6,
        save_strategy="no", report_to=[], use_cpu=not args.gpu, bf16=args.gpu, gradient_checkpointing=False,
        generation_kwargs={"suppress_tokens": suppressed}, model_init_kwargs={"dtype": "bfloat16" if args.gpu else
        "float32"}, seed=0,
    )  # fmt: skip
    arms = (("mmrl", True), ("mmrl_plain", False)) if args.plain else (("mmrl", True),)
    results: dict[str, list] = {"trl": [], **{key: [] for key, _ in arms}}

    class Alternate(TrainerCallback):
        def on_step_begin(self, *unused, **kw):
            self.memory = Memory().__enter__()
            self.start = time.perf_counter()

        def on_step_end(self, *unused, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - self.start
            self.memory.__exit__()
            metrics = trainer._metrics["train"]
            lengths = {metrics["completions/min_length"][-1], metrics["completions/max_length"][-1]}
            assert lengths == {COMPLETION}, f"TRL's completions must all be {COMPLETION} tokens, got {lengths}"
            results["trl"].append((elapsed, self.memory.used_mib, {}))
            for key, share in arms:
                with Memory() as memory:
                    times = mmrl_step(run, share)
                results[key].append((times["time/step"], memory.used_mib, times))
            n = len(results["trl"])
            plain = f", mmrl sharing off {results['mmrl_plain'][-1][0]:.2f}s" if args.plain else ""
            print(f"step {n}: trl {elapsed:.2f}s, mmrl {results['mmrl'][-1][0]:.2f}s{plain}", flush=True)

    trainer = GRPOTrainer(
        model=str(model_path), reward_funcs=reward, args=trl_args, train_dataset=Dataset.from_list(rows),
        processing_class=processor, callbacks=[Alternate()],
    )  # fmt: skip
    trainer.train()

    def summary(key: str) -> tuple[float, float, float, float]:
        measured = results[key][args.warmup :]
        times = [t for t, _, _ in measured]
        return statistics.median(times), min(times), max(times), max(m for _, m, _ in measured)

    device = torch.cuda.get_device_name() if args.gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{device}; B={args.batch} prompts x G={G}, {COMPLETION}-token completions, 256 visual tokens per image, "
          f"{args.steps} measured steps after {args.warmup} warm-up")  # fmt: skip
    memory_kind = "peak GPU memory above the step's start" if args.gpu else "peak RSS above the step's start"
    labels = {"trl": "TRL GRPOTrainer", "mmrl": "mmrl (sharing on)", "mmrl_plain": "mmrl (sharing off)"}
    for key in results:
        label = labels[key]
        median, low, high, mem = summary(key)
        tokens = args.batch * G * COMPLETION / median
        print(f"{label:20s} step median {median:6.2f}s (min {low:.2f}, max {high:.2f}); {memory_kind} {mem:8.1f} MiB; "
              f"{tokens:7.1f} completion tokens/s")  # fmt: skip
    phases = {k: statistics.median(p[k] for _, _, p in results["mmrl"][args.warmup :]) for k in results["mmrl"][0][2]}
    print("mmrl phases (median s): " + ", ".join(f"{k.split('/')[1]} {v:.2f}" for k, v in phases.items()))
    if args.plain:
        plain = {k: statistics.median(p[k] for _, _, p in results["mmrl_plain"][args.warmup :]) for k in phases}
        print("mmrl sharing off phases: " + ", ".join(f"{k.split('/')[1]} {v:.2f}" for k, v in plain.items()))
        print(f"ratio mmrl sharing off/trl: {summary('mmrl_plain')[0] / summary('trl')[0]:.2f}")
    print(f"ratio mmrl/trl: {summary('mmrl')[0] / summary('trl')[0]:.2f}")


if __name__ == "__main__":
    main()
