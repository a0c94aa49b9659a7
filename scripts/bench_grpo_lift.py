"""What does GRPO add beyond supervised data? A benchmark with honest controls (not a CI test; a few minutes a seed
on 2 CPU cores at the defaults).

Every arm starts from the shipped warm start (assets/warm_start/, scripts/make_warm_start.py): a tiny Qwen2.5-VL that
reads which colour belongs to which shape, trained on what ordinary VQA data gives a model (counterfactuals mostly
labelled with the original answer, "unknown" for only a few), so it answers when the evidence is masked. Per seed:

1. GRPO: the quickstart's stage (`mmrl train configs/quickstart.yaml`, the variant-aware rewards) for `--grpo-steps`
   steps on its training manifest; its wall time W is measured;
2. control (a), SFT continued: the warm start's own SFT (configs/sft_synthetic.yaml with the recipe's overrides
   recorded in warm_start.json, same data, same labels: the original answer on most counterfactuals) for the same
   wall time W (`sft.max_seconds`);
3. control (b), SFT on fully labelled variants: the same SFT with every counterfactual labelled "unknown", for the
   same wall time W: the upper bound supervision reaches when someone has labelled the data;
4. each arm evaluated greedily on the held-out manifest (other scenes): accuracy, abstention, format, reward per
   variant.

Printed: each arm's mean +- std over seeds, and GRPO's lift over control (a) (paired by seed). Every run's JSON goes
to OUT/results.json, the table to OUT/report.md. Whatever the numbers are, they are the result.

    .venv/bin/python scripts/bench_grpo_lift.py --seeds 0 1 2 --out runs/bench_grpo_lift

A finished seed's result (OUT/seedN/result.json) is reused, so seeds can run as separate processes (`--seeds 1`)
and a last call with every seed prints the table.
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

KEYS = ("accuracy", "abstention_rate", "format_rate", "reward")
VARIANTS = ("positive", "counterfactual", "random_masked", "all")
ARMS = ("warm_start", "control_a", "control_b", "grpo")


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def run_seed(seed: int, args: argparse.Namespace, manifests: dict[str, Path], warm: dict) -> dict:
    from mmrl.config.loader import load_config
    from mmrl.config.schema import TrainConfig
    from mmrl.data.manifest import read_manifest
    from mmrl.eval.evaluate import evaluate_samples
    from mmrl.rl.loop import train
    from mmrl.rl.sft import SFTConfig, sft

    out = Path(args.out) / f"seed{seed}"
    heldout = read_manifest(manifests["heldout"])
    common = [f"model.name_or_path={args.warm_start}", "model.tiny_family=null", "data.eval_manifest=null",
              f"training.seed={seed}", "training.resume=never", "logging.tensorboard=false"]  # fmt: skip
    result: dict = {"seed": seed, "warm_start": warm}

    grpo_config = load_config(TrainConfig, ROOT / "configs" / "quickstart.yaml", [*common,
        f"data.train_manifest={manifests['grpo']}", f"training.output_dir={out / 'grpo'}",
        f"training.max_steps={args.grpo_steps}", "logging.samples_steps=0",
    ])  # fmt: skip
    t0 = time.perf_counter()
    run = train(grpo_config)
    wall = time.perf_counter() - t0
    result["grpo_seconds"] = wall
    _, result["grpo"], _ = evaluate_samples(run.unwrapped_model, run.processor, run.frame, heldout, grpo_config)

    for arm, fraction in (("control_a", args.cf_fraction), ("control_b", 1.0)):
        config = load_config(SFTConfig, ROOT / "configs" / "sft_synthetic.yaml", [*common, *args.sft_overrides,
            f"data.train_manifest={manifests['sft']}", f"training.output_dir={out / arm}", "training.max_steps=100000",
            "training.warmup_steps=0", f"sft.counterfactual_fraction={fraction}", "sft.other_counterfactuals=original",
            f"sft.max_seconds={wall}",
        ])  # fmt: skip
        control = sft(config)
        result[f"{arm}_steps"] = control.step
        _, result[arm], _ = evaluate_samples(control.model, control.processor, run.frame, heldout, config)
    return result


def report(results: list[dict]) -> str:
    lines = ["| variant | metric | warm start | (a) SFT continued | (b) SFT, all labelled | GRPO | GRPO - (a) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for variant in VARIANTS:
        for key in KEYS:

            def values(arm: str, v: str = variant, k: str = key) -> list[float]:
                return [r[arm]["variants"][v][k] for r in results]

            lift = [g - c for g, c in zip(values("grpo"), values("control_a"), strict=True)]
            cells = " | ".join(_mean_std(values(arm)) for arm in ARMS)
            lines.append(f"| {variant} | {key} | {cells} | {_mean_std(lift)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_grpo_lift")
    parser.add_argument("--warm-start", default=str(ROOT / "assets" / "warm_start"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--grpo-steps", type=int, default=None, help="default: training.max_steps of the config")
    help = "control (a)'s share of counterfactuals labelled unknown (default: the warm start's)"
    parser.add_argument("--cf-fraction", type=float, default=None, help=help)
    parser.add_argument("--sft-items", type=int, default=None, help="default: the warm start's training items")
    parser.add_argument("--grpo-items", type=int, default=200)
    parser.add_argument("--eval-items", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from data_builders.build import build
    from data_builders.config import BuildConfig
    from mmrl.config.loader import load_config
    from mmrl.config.schema import TrainConfig
    from mmrl.data.manifest import read_manifest
    from mmrl.eval.evaluate import evaluate_samples, load_model_folder

    torch.set_num_threads(args.threads)
    made = json.loads((Path(args.warm_start) / "warm_start.json").read_text())  # how the warm start was trained
    args.cf_fraction = made["cf_fraction"] if args.cf_fraction is None else args.cf_fraction
    args.sft_items = made["train_items"] if args.sft_items is None else args.sft_items
    args.sft_overrides = made.get("sft_overrides", [])  # the warm start's SFT recipe: the controls continue it
    if args.grpo_steps is None:
        args.grpo_steps = load_config(TrainConfig, ROOT / "configs" / "quickstart.yaml", []).training.max_steps
    out = Path(args.out)
    manifests = {}
    for name, config, items in (("sft", "synthetic.yaml", args.sft_items), ("grpo", "synthetic.yaml", args.grpo_items),
                                ("heldout", "synthetic_heldout.yaml", args.eval_items)):  # fmt: skip
        folder = out / "data" / f"{Path(config).stem}-{items}"
        if not (folder / "manifest.jsonl").is_file():
            overrides = [f"out={folder}", f"source.num_items={items}", "workers=0", "progress=false"]
            build(load_config(BuildConfig, ROOT / "configs" / "build" / config, overrides))
        manifests[name] = folder / "manifest.jsonl"
    start = time.perf_counter()
    model, processor, _, frame = load_model_folder(args.warm_start)
    eval_config = load_config(TrainConfig, ROOT / "configs" / "quickstart.yaml", [])
    _, warm, _ = evaluate_samples(model, processor, frame, read_manifest(manifests["heldout"]), eval_config)
    results = []
    for seed in args.seeds:
        done = out / f"seed{seed}" / "result.json"  # a finished seed is reused: seeds can run in parallel processes
        if done.is_file():
            results.append(json.loads(done.read_text()))
            print(f"seed {seed}: reusing {done}")
            continue
        results.append(run_seed(seed, args, manifests, warm))
        done.write_text(json.dumps(results[-1], indent=2))
        print(f"seed {seed} done ({time.perf_counter() - start:.0f}s so far)", flush=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    table = report(results)
    mean = statistics.mean
    steps = {key: mean(r[key] for r in results) for key in ("grpo_seconds", "control_a_steps", "control_b_steps")}
    header = (f"held-out ({args.eval_items} items x 3 variants), greedy; {len(results)} seeds; GRPO {args.grpo_steps} "
              f"steps (mean {steps['grpo_seconds']:.0f}s); for the same wall time, SFT continued (a, cf-fraction "
              f"{args.cf_fraction}: mean {steps['control_a_steps']:.0f} steps) and SFT on fully labelled variants "
              f"(b: mean {steps['control_b_steps']:.0f} steps)")  # fmt: skip
    (out / "report.md").write_text(f"{header}\n\n{table}")
    print(f"\n{header}\n{table}", end="")
    print(f"total {time.perf_counter() - start:.0f}s; results in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
