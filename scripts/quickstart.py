"""The quickstart flow on the embedded default (run by scripts/quickstart.sh after the environment is set up).

build the GRPO training + held-out manifests -> evaluate the shipped warm start (assets/warm_start/, made by
scripts/make_warm_start.py: a tiny Qwen2.5-VL that reads which colour belongs to which shape and answers even
when the evidence is masked) -> GRPO (`mmrl train configs/quickstart.yaml`, a held-out evaluation
every few steps) -> evaluate -> export -> a before/after table per variant and one PNG of the reward curves and the
held-out abstention per variant over the GRPO steps, all under `runs/quickstart/` (or --out). Every stage reuses what a
previous run finished: the manifests, the GRPO checkpoint (resume=auto), the evaluations (cached per checkpoint), so
a rerun is fast and gives the same numbers.

Options: --out DIR, --warm-start DIR, --grpo-steps N, --eval-items N (held-out items; 3 samples each),
--train-items N, --threads N (default: the cores not busy now); any further `section.key=value` arguments go to
the GRPO config.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from any folder
    sys.path.insert(0, str(ROOT))

VARIANTS = ("positive", "counterfactual", "random_masked", "all")
TABLE_KEYS = ("accuracy", "abstention_rate", "format_rate", "reward", "mean_iou", "AP50")
WARM_START = ROOT / "assets" / "warm_start"


def free_cores(limit: int = 4) -> int:
    """The cores not busy now (the 1-minute load average taken off the usable ones), at least 1, at most `limit`.

    torch's default of one thread per core oversubscribes a shared machine: a GRPO step that takes ~0.5 s idle
    took 50-70 s while other jobs ran (DESIGN.md). Fewer threads than cores only slows an idle machine a little.
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(limit, usable, round(usable - busy)))


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
    lines = ["| variant | metric | warm start | after GRPO | change |", "|---|---|---|---|---|"]
    for variant in VARIANTS:
        b, a = before["variants"].get(variant), after["variants"].get(variant)
        if b is None or a is None:
            continue
        for key in TABLE_KEYS:
            if b.get(key) is None or a.get(key) is None:
                continue
            lines.append(f"| {variant} | {key} | {b[key]:.3f} | {a[key]:.3f} | {a[key] - b[key]:+.3f} |")
    return "\n".join(lines) + "\n"


def plot_curves(metrics_path: Path, before: dict, out_png: Path) -> Path:
    """One PNG: sampled reward and its terms, held-out abstention per variant (step 0: the warm start), exploration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    terms = ("reward", "reward/answer", "reward/format", "reward/grounding")
    panels = ((axes[0], terms, "mean reward of sampled completions"), (axes[2], ("frac_zero_spread",), "exploration"))
    for axis, keys, title in panels:
        for key in keys:
            points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
            if points:
                axis.plot(*zip(*points, strict=True), label=key)
        axis.set_title(title)
    for variant, style in zip(VARIANTS[:3], ("o-", "s--", "^:"), strict=True):  # overlapping lines stay visible
        key = f"eval/{variant}/abstention_rate"
        points = [(0, before["variants"][variant]["abstention_rate"])] if variant in before["variants"] else []
        points += [(r["step"], r[key]) for r in records if r.get(key) is not None]
        axes[1].plot(*zip(*points, strict=True), style, markersize=9 - 2 * len(axes[1].lines), label=variant)
    axes[1].set_ylim(-0.05, 1.05)
    axes[1].set_title("held-out abstention rate (greedy)")
    for axis in axes:
        axis.set_xlabel("GRPO step")
        axis.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/quickstart")
    parser.add_argument("--warm-start", default=str(WARM_START), help="the model folder GRPO starts from")
    parser.add_argument("--grpo-steps", type=int, default=None, help="default: training.max_steps of the config")
    parser.add_argument("--train-items", type=int, default=200)
    parser.add_argument("--eval-items", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the cores not busy now)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides of the GRPO config")
    args = parser.parse_intermixed_args(argv)

    import torch

    from mmrl.config.loader import load_config
    from mmrl.config.schema import TrainConfig
    from mmrl.errors import UserError
    from mmrl.eval.evaluate import load_model_folder
    from mmrl.io.checkpoint import latest_checkpoint
    from mmrl.io.export import export
    from mmrl.rl.loop import train

    threads = args.threads or free_cores()
    torch.set_num_threads(threads)
    out = Path(args.out)
    warm_dir = Path(args.warm_start)
    if not (warm_dir / "model.safetensors").is_file():
        raise UserError(f"no warm start at {warm_dir} (make one with scripts/make_warm_start.py)")
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    print(f"torch threads: {threads}")

    stage("1/5 data: GRPO training and held-out manifests")
    train_manifest, eval_manifest = build_manifests(out, args.train_items, args.eval_items)
    times["data"] = time.perf_counter() - t0

    steps = [f"training.max_steps={args.grpo_steps}"] if args.grpo_steps else []
    grpo_config = load_config(TrainConfig, ROOT / "configs" / "quickstart.yaml", [
        f"model.name_or_path={warm_dir}", f"data.train_manifest={train_manifest}",
        f"data.eval_manifest={eval_manifest}", f"training.output_dir={out / 'grpo'}", f"training.seed={args.seed}",
        *steps, *args.overrides,
    ])  # fmt: skip

    stage(f"2/5 evaluate the warm start ({warm_dir}) on the held-out manifest")
    t = time.perf_counter()
    model, processor, _, frame = load_model_folder(warm_dir)
    before = cached_eval(model, processor, frame, eval_manifest, grpo_config, out / "eval-warm-start",
                         str(warm_dir.resolve()))  # fmt: skip
    del model
    times["eval before"] = time.perf_counter() - t

    stage(f"3/5 GRPO ({grpo_config.training.max_steps} steps; `mmrl train configs/quickstart.yaml`)")
    t = time.perf_counter()
    run = train(grpo_config)
    times["grpo"] = time.perf_counter() - t

    stage("4/5 evaluate after GRPO, export")
    t = time.perf_counter()
    final = latest_checkpoint(run.run_dir)
    after = cached_eval(run.unwrapped_model, run.processor, frame, eval_manifest, grpo_config, out / "eval-grpo",
                        str(final.resolve()))  # fmt: skip
    model_dir = export(run.run_dir, out / "model")
    times["eval after + export"] = time.perf_counter() - t

    stage("5/5 report")
    table = before_after_table(before, after)
    png = plot_curves(run.run_dir / "metrics.jsonl", before, out / "curves.png")
    report = out / "report.md"
    title = "# quickstart: the warm start vs after GRPO (held-out, greedy)"
    report.write_text(f"{title}\n\n{table}\n![curves](curves.png)\n", encoding="utf-8")
    print(table, end="")
    times["total"] = time.perf_counter() - t0
    print("times: " + ", ".join(f"{k} {v:.0f}s" for k, v in times.items()))
    print(f"report: {report}\ncurves (reward, held-out abstention per variant): {png}\nexported model: {model_dir}")
    print(f"try: .venv/bin/mmrl infer {model_dir} --image IMAGE --question 'What color is the circle?' --out boxes.png")
    return 0


if __name__ == "__main__":
    from mmrl.errors import UserError

    try:
        sys.exit(main())
    except UserError as err:
        print(f"quickstart: {err}", file=sys.stderr)
        sys.exit(2)
