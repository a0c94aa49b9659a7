"""What does GRPO add beyond SFT? A benchmark (not a CI test; up to ~30 minutes on 2 CPU cores at the defaults).

Design (issue 8; DESIGN.md "Learning on these CPUs"): a warm start that leaves GRPO calibration headroom, then two
arms from the same checkpoint, for the same wall time, per seed:

1. SFT warm start on the synthetic grid data (think template) with few counterfactual labels: only
   `--cf-fraction` of the items keep their counterfactual ("unknown") in the SFT data;
2. GRPO arm: `mmrl train` from the warm start with the variant-aware rewards (answer: +1 right / 0 wrong, abstaining
   on an answerable image -1, counterfactual +1 abstain / -0.6 guess / -1.5 original, unparseable -1.5; format;
   grounding), `--grpo-steps` steps; its wall time W is measured;
3. control arm: SFT continued from the same warm start on the same SFT data (same few counterfactual labels), same
   learning rate and optimiser, for the same wall time W (`sft.max_seconds`);
4. both evaluated greedily on a held-out manifest (other scenes): per variant accuracy, abstention rate, reward.

Printed: each arm's mean +- std over seeds, and the lift (GRPO - control, paired by seed) with its std. The JSON of
every run is written to OUT/results.json. Whatever the numbers are, they are the result.

    .venv/bin/python scripts/bench_grpo_lift.py --seeds 0 1 2 --out runs/bench_grpo_lift
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KEYS = ("accuracy", "abstention_rate", "reward", "format_rate")
VARIANTS = ("positive", "counterfactual", "random_masked", "all")


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def run_seed(seed: int, args: argparse.Namespace, train_manifest: Path, eval_manifest: Path) -> dict:
    from mmrl.boxes import FrameSpec
    from mmrl.config.loader import load_config
    from mmrl.config.schema import TrainConfig
    from mmrl.data.manifest import read_manifest
    from mmrl.eval.evaluate import evaluate_samples
    from mmrl.rl.loop import train
    from mmrl.rl.sft import SFTConfig, sft

    out = Path(args.out) / f"seed{seed}"
    frame = FrameSpec.for_family("qwen2_5_vl", 7056, 7056)
    heldout = read_manifest(eval_manifest)
    base = [f"data.train_manifest={train_manifest}", "data.eval_manifest=null", f"training.seed={seed}",
            "training.resume=never", "logging.tensorboard=false"]  # fmt: skip
    sft_file = ROOT / "configs" / "sft_synthetic.yaml"
    warm_config = load_config(SFTConfig, sft_file, [*base,
        f"model.name_or_path={Path(args.out) / 'tiny-qwen2_5_vl'}", f"training.output_dir={out / 'sft'}",
        f"training.max_steps={args.sft_steps}", f"sft.counterfactual_fraction={args.cf_fraction}",
    ])  # fmt: skip
    warm = sft(warm_config)
    result: dict = {"seed": seed}
    _, result["warm_start"], _ = evaluate_samples(warm.model, warm.processor, frame, heldout, warm_config)

    grpo_config = load_config(TrainConfig, ROOT / "configs" / "quickstart.yaml", [*base,
        f"model.name_or_path={warm.checkpoint / 'model'}", f"training.output_dir={out / 'grpo'}",
        f"training.max_steps={args.grpo_steps}", f"training.learning_rate={args.lr}", "logging.samples_steps=0",
    ])  # fmt: skip
    t0 = time.perf_counter()
    run = train(grpo_config)
    wall = time.perf_counter() - t0
    result["grpo_seconds"] = wall
    _, result["grpo"], _ = evaluate_samples(run.unwrapped_model, run.processor, frame, heldout, grpo_config)

    control_config = load_config(SFTConfig, sft_file, [*base,
        f"model.name_or_path={warm.checkpoint / 'model'}", "model.tiny_family=null",
        f"training.output_dir={out / 'control'}", "training.max_steps=100000", f"training.learning_rate={args.lr}",
        "training.lr_scheduler=constant", "training.warmup_steps=2", f"sft.counterfactual_fraction={args.cf_fraction}",
        f"sft.max_seconds={wall}",
    ])  # fmt: skip
    control = sft(control_config)
    result["control_steps"] = control.step
    _, result["control"], _ = evaluate_samples(control.model, control.processor, frame, heldout, control_config)
    return result


def report(results: list[dict]) -> str:
    lines = ["| variant | metric | warm start | SFT-continued control | GRPO | lift (GRPO - control) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for variant in VARIANTS:
        for key in KEYS:

            def values(arm: str, v: str = variant, k: str = key) -> list[float]:
                return [r[arm]["variants"][v][k] for r in results]

            lift = [g - c for g, c in zip(values("grpo"), values("control"), strict=True)]
            lines.append(f"| {variant} | {key} | {_mean_std(values('warm_start'))} | {_mean_std(values('control'))} "
                         f"| {_mean_std(values('grpo'))} | {_mean_std(lift)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_grpo_lift")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sft-steps", type=int, default=150)
    parser.add_argument("--grpo-steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=3e-4, help="learning rate of both arms")
    parser.add_argument("--cf-fraction", type=float, default=0.1, help="share of items with a counterfactual label")
    parser.add_argument("--train-items", type=int, default=200)
    parser.add_argument("--eval-items", type=int, default=100)
    args = parser.parse_args()

    import torch

    from data_builders.build import build
    from data_builders.config import BuildConfig
    from mmrl.config.loader import load_config

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    out = Path(args.out)
    manifests = []
    for name, config, items in (("train", "synthetic.yaml", args.train_items),
                                ("heldout", "synthetic_heldout.yaml", args.eval_items)):  # fmt: skip
        folder = out / "data" / f"{name}-{items}"
        if not (folder / "manifest.jsonl").is_file():
            overrides = [f"out={folder}", f"source.num_items={items}", "workers=0"]
            build(load_config(BuildConfig, ROOT / "configs" / "build" / config, overrides))
        manifests.append(folder / "manifest.jsonl")
    start = time.perf_counter()
    results = []
    for seed in args.seeds:
        results.append(run_seed(seed, args, *manifests))
        (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
        print(f"seed {seed} done ({time.perf_counter() - start:.0f}s so far)", flush=True)
    table = report(results)
    (out / "report.md").write_text(table)
    print(f"\nheld-out, greedy; {len(results)} seeds; cf-fraction {args.cf_fraction}; GRPO {args.grpo_steps} steps "
          f"(mean {statistics.mean(r['grpo_seconds'] for r in results):.0f}s) vs SFT-continued for the same time "
          f"(mean {statistics.mean(r['control_steps'] for r in results):.0f} steps)")  # fmt: skip
    print(table, end="")
    print(f"total {time.perf_counter() - start:.0f}s; results in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
