"""The quickstart flow on the embedded default (run by scripts/quickstart.sh after the environment is set up).

build train + held-out manifests -> SFT warm start (`mmrl sft configs/sft_synthetic.yaml`) -> evaluate ->
GRPO (`mmrl train configs/quickstart.yaml`) -> evaluate -> export -> a before/after table per variant and a PNG of
the reward curves, all under `runs/quickstart/` (or --out). Every stage reuses what a previous run finished: the
manifests, the SFT and GRPO checkpoints (resume=auto), the evaluations (cached per checkpoint), so a rerun is fast
and gives the same numbers.

Options: --out DIR, --sft-steps N, --grpo-steps N, --eval-items N (held-out items evaluated; 3 samples each),
--train-items N; any further `section.key=value` arguments go to the GRPO config.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from any folder
    sys.path.insert(0, str(ROOT))

VARIANTS = ("positive", "counterfactual", "random_masked", "all")
TABLE_KEYS = ("accuracy", "abstention_rate", "format_rate", "reward", "mean_iou", "AP50")


def stage(name: str) -> None:
    print(f"\n== {name} ==", flush=True)


def build_manifests(out: Path, train_items: int, eval_items: int) -> tuple[Path, Path]:
    from data_builders.build import build
    from data_builders.config import BuildConfig
    from mmrl.config.loader import load_config

    paths = []
    for name, config, items in (("train", "synthetic.yaml", train_items), ("heldout", "synthetic_heldout.yaml",
                                                                           eval_items)):  # fmt: skip
        folder = out / "data" / f"{name}-{items}"
        manifest = folder / "manifest.jsonl"
        if not manifest.is_file():
            overrides = [f"out={folder}", f"source.num_items={items}", "workers=0"]
            build(load_config(BuildConfig, ROOT / "configs" / "build" / config, overrides))
        else:
            print(f"reusing {manifest}")
        paths.append(manifest)
    return paths[0], paths[1]


def cached_eval(model, processor, frame, manifest_path: Path, config, out_dir: Path, key: str) -> dict:
    """The evaluation summary of `key` (a checkpoint), computed once and kept in out_dir/metrics.json."""
    from mmrl.data.manifest import read_manifest
    from mmrl.eval.evaluate import evaluate_samples, markdown_table, write_report

    stamp = out_dir / "checkpoint.txt"
    if stamp.is_file() and stamp.read_text() == key and (out_dir / "metrics.json").is_file():
        print(f"reusing {out_dir / 'metrics.json'}")
        return json.loads((out_dir / "metrics.json").read_text())
    rows, summary, _ = evaluate_samples(model, processor, frame, read_manifest(manifest_path), config)
    write_report(out_dir, rows, summary)
    stamp.write_text(key)
    print(markdown_table(summary), end="")
    return summary


def before_after_table(before: dict, after: dict) -> str:
    lines = ["| variant | metric | SFT warm start | after GRPO | change |", "|---|---|---|---|---|"]
    for variant in VARIANTS:
        b, a = before["variants"].get(variant), after["variants"].get(variant)
        if b is None or a is None:
            continue
        for key in TABLE_KEYS:
            if b.get(key) is None or a.get(key) is None:
                continue
            lines.append(f"| {variant} | {key} | {b[key]:.3f} | {a[key]:.3f} | {a[key] - b[key]:+.3f} |")
    return "\n".join(lines) + "\n"


def plot_rewards(metrics_path: Path, out_png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in records]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    panels = (
        (left, ("reward", "reward/answer", "reward/format", "reward/grounding"), "mean reward of sampled completions"),
        (right, ("frac_zero_spread", "entropy"), "exploration"),
    )
    for axis, keys, title in panels:
        for key in keys:
            values = [r.get(key) for r in records]
            if any(v is not None for v in values):
                axis.plot(steps, [float("nan") if v is None else v for v in values], label=key)
        axis.set_xlabel("GRPO step")
        axis.set_title(title)
        axis.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/quickstart")
    parser.add_argument("--sft-steps", type=int, default=150)
    parser.add_argument("--grpo-steps", type=int, default=20)
    parser.add_argument("--train-items", type=int, default=200)
    parser.add_argument("--eval-items", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides of the GRPO config")
    args = parser.parse_intermixed_args(argv)

    import torch

    from mmrl.boxes import FrameSpec
    from mmrl.config.loader import load_config
    from mmrl.config.schema import TrainConfig
    from mmrl.io.export import export
    from mmrl.rl.loop import train
    from mmrl.rl.sft import SFTConfig, sft

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    out = Path(args.out)
    times: dict[str, float] = {}
    t0 = time.perf_counter()

    stage("1/6 data: training and held-out manifests")
    train_manifest, eval_manifest = build_manifests(out, args.train_items, args.eval_items)
    times["data"] = time.perf_counter() - t0

    stage(f"2/6 SFT warm start ({args.sft_steps} steps; `mmrl sft configs/sft_synthetic.yaml`)")
    t = time.perf_counter()
    sft_config = load_config(SFTConfig, ROOT / "configs" / "sft_synthetic.yaml", [
        f"model.name_or_path={out / 'tiny-qwen2_5_vl'}", f"data.train_manifest={train_manifest}",
        "data.eval_manifest=null", f"training.output_dir={out / 'sft'}", f"training.max_steps={args.sft_steps}",
        f"training.seed={args.seed}",
    ])  # fmt: skip
    warm = sft(sft_config)
    times["sft"] = time.perf_counter() - t
    frame = FrameSpec.for_family("qwen2_5_vl", sft_config.model.min_pixels, sft_config.model.max_pixels)

    stage("3/6 evaluate the warm start on the held-out manifest")
    t = time.perf_counter()
    before = cached_eval(warm.model, warm.processor, frame, eval_manifest, sft_config, out / "eval-sft",
                         str(warm.checkpoint.resolve()))  # fmt: skip
    times["eval before"] = time.perf_counter() - t

    stage(f"4/6 GRPO ({args.grpo_steps} steps; `mmrl train configs/quickstart.yaml`)")
    t = time.perf_counter()
    grpo_config = load_config(TrainConfig, ROOT / "configs" / "quickstart.yaml", [
        f"model.name_or_path={warm.checkpoint / 'model'}", f"data.train_manifest={train_manifest}",
        f"training.output_dir={out / 'grpo'}", f"training.max_steps={args.grpo_steps}", f"training.seed={args.seed}",
        *args.overrides,
    ])  # fmt: skip
    run = train(grpo_config)
    times["grpo"] = time.perf_counter() - t

    stage("5/6 evaluate after GRPO, export")
    t = time.perf_counter()
    from mmrl.io.checkpoint import latest_checkpoint

    final = latest_checkpoint(run.run_dir)
    after = cached_eval(run.unwrapped_model, run.processor, frame, eval_manifest, grpo_config, out / "eval-grpo",
                        str(final.resolve()))  # fmt: skip
    model_dir = export(run.run_dir, out / "model")
    times["eval after + export"] = time.perf_counter() - t

    stage("6/6 report")
    table = before_after_table(before, after)
    png = plot_rewards(run.run_dir / "metrics.jsonl", out / "reward_curves.png")
    report = out / "report.md"
    report.write_text(f"# quickstart: SFT warm start vs after GRPO (held-out, greedy)\n\n{table}", encoding="utf-8")
    print(table, end="")
    times["total"] = time.perf_counter() - t0
    print("times: " + ", ".join(f"{k} {v:.0f}s" for k, v in times.items()))
    print(f"report: {report}\nreward curves: {png}\nexported model: {model_dir}")
    print(f"try: .venv/bin/mmrl infer {model_dir} --image IMAGE --question 'What color is the circle?' --out boxes.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
