"""`mmrl build`: read a source, localize, make the variants, write the manifest.

    mmrl build CONFIG [key=value ...] [--out DIR]
    mmrl build --input FILE.jsonl --out DIR [key=value ...]

The items are enumerated here (light references, no pixels), cut into shards of `shard_size`, and the shards built
by `workers` processes. A rerun in the same folder with the same config and source resumes: finished shards are
kept, the rest rebuilt, and the merge writes each record once. Another config or a changed source in a folder that
holds an unfinished or finished build is an error unless `overwrite=true`.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from data_builders import manifest
from data_builders.adapters import iter_items
from data_builders.config import BuildConfig
from data_builders.worker import init_worker, run_shard
from mmrl.config.loader import load_config, save_config, to_dict
from mmrl.errors import UserError

# settings that change how a build runs, not what it produces: a resumed build may change them
_RUN_ONLY = ("workers", "progress", "overwrite", "out")


def fingerprint(cfg: BuildConfig, ids: list[str]) -> str:
    settings = {k: v for k, v in to_dict(cfg).items() if k not in _RUN_ONLY}
    digest = hashlib.sha256(yaml.safe_dump(settings, sort_keys=True).encode("utf-8"))
    for item_id in ids:
        digest.update(item_id.encode("utf-8") + b"\0")
    return digest.hexdigest()


def _check_plan(out: Path, plan: dict[str, Any], cfg: BuildConfig) -> None:
    old = manifest.read_plan(out)
    if old is not None and old != plan:
        if not cfg.overwrite:
            raise UserError(
                f"{out} holds a build of another config or source; use another --out, or overwrite=true to replace it"
            )
        manifest.clear(out)
    elif old is None and (out / "manifest.jsonl").exists():
        if not cfg.overwrite:
            raise UserError(f"{out} holds a manifest this builder didn't make; use another --out or overwrite=true")
        manifest.clear(out)
    elif old is None and any(p.name not in ("config.yaml", "images", manifest.SHARDS) for p in out.iterdir()):
        # e.g. a training run folder: its config.yaml would be replaced by the build's
        raise UserError(f"{out} holds files that are not a build (a run folder?); choose an empty or new --out")


def _remove_temp_files(out: Path) -> None:
    """Image files a killed build left half-written (`x.png.tmp`, `.x.png.tmp<pid>`): never part of a manifest."""
    images = out / "images"
    if images.is_dir():
        for path in images.rglob("*.tmp*"):
            if path.is_file() and re.search(r"\.tmp\d*$", path.name):
                path.unlink()


def build(cfg: BuildConfig) -> dict[str, Any]:
    """Build (or finish building) `cfg.out`; returns the summary."""
    from tqdm import tqdm

    if not cfg.out:
        raise UserError("no output folder: pass --out DIR or out=DIR")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    entries = list(iter_items(cfg))
    if not entries:
        raise UserError(f"nothing built: the source holds no items (source.kind {cfg.source.kind})")
    shards = [entries[i : i + cfg.shard_size] for i in range(0, len(entries), cfg.shard_size)]
    plan = {"fingerprint": fingerprint(cfg, [e.id for e in entries]), "shards": len(shards), "entries": len(entries)}
    out.mkdir(parents=True, exist_ok=True)
    _check_plan(out, plan, cfg)
    manifest.write_plan(out, plan)
    _remove_temp_files(out)
    save_config(cfg, out)
    done = manifest.done_shards(out, len(shards))
    todo = [i for i in range(len(shards)) if i not in done]
    bar = tqdm(
        total=len(entries),
        initial=sum(len(shards[i]) for i in done),
        unit="item",
        desc="build",
        disable=not cfg.progress,
        file=sys.stderr,
    )
    with bar:
        if cfg.workers <= 1 or len(todo) <= 1:
            init_worker(cfg)
            for i in todo:
                bar.update(run_shard(i, shards[i]))
        else:
            # fork: workers start in milliseconds and inherit the imported modules; no engine is loaded before it
            context = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
            with context.Pool(min(cfg.workers, len(todo)), initializer=init_worker, initargs=(cfg,)) as pool:
                jobs = [pool.apply_async(run_shard, (i, shards[i])) for i in todo]
                for job in jobs:
                    bar.update(job.get())
    summary = manifest.merge(out, len(shards))
    if summary["items"] == 0:
        raise UserError(nothing_built(out, summary))
    return summary


def nothing_built(out: Path, summary: dict[str, Any]) -> str:
    """The one line a build that wrote no item ends with: why, from the rejects."""
    codes = ", ".join(f"{code} x{count}" for code, count in summary["reject_codes"].items())
    first = manifest.first_reject(out)
    return (
        f"nothing built: all {summary['rejects']} records rejected ({codes}); first: {first} (see {out}/rejects.jsonl)"
    )


def parse_args(argv: list[str]) -> tuple[str | None, list[str]]:
    parser = argparse.ArgumentParser(
        prog="mmrl build",
        description="Build a manifest with positive / counterfactual / random-masked variants.",
        epilog="examples: mmrl build configs/build/synthetic.yaml --out runs/data/synthetic/train | "
        "mmrl build --input data.jsonl --out runs/data/mine | overrides: source.num_items=50 seed=1 workers=4",
    )
    parser.add_argument("args", nargs="*", help="CONFIG (a YAML file) and/or key=value overrides")
    parser.add_argument("--input", help="a VQA JSONL file (sets source.kind=jsonl source.path=FILE)")
    parser.add_argument("--out", help="the output folder (sets out=DIR)")
    ns = parser.parse_intermixed_args(argv)  # overrides may come before or after --out
    configs = [a for a in ns.args if "=" not in a]
    overrides = [a for a in ns.args if "=" in a]
    if len(configs) > 1:
        raise UserError(f"one config file at most, got {', '.join(configs)} (overrides are key=value)")
    if ns.input:
        overrides = ["source.kind=jsonl", f"source.path={ns.input}"] + overrides
    if ns.out:
        overrides.append(f"out={ns.out}")
    if not configs and not ns.input and not any(o.startswith("source.") for o in overrides):
        raise UserError("nothing to build: pass a CONFIG file or --input FILE.jsonl")
    return (configs[0] if configs else None), overrides


def main(argv: list[str]) -> int:
    config_path, overrides = parse_args(argv)
    cfg = load_config(BuildConfig, config_path, overrides)
    summary = build(cfg)  # a build that writes nothing raises, naming why
    variants = ", ".join(f"{k} {v}" for k, v in summary["variants"].items()) or "none"
    print(f"built {cfg.out}: {summary['items']} items ({variants}); {summary['rejects']} rejects")
    return 0


def ensure_manifest(manifest_path: str | Path, build_config: str | None) -> None:
    """Build a missing training manifest from `build_config` (`training.build_config`), so that a config such as
    `configs/debug_tiny.yaml` runs from a clean checkout; nothing when the manifest exists or no config is named."""
    manifest_path = Path(manifest_path)
    if manifest_path.is_file() or not build_config:
        return
    print(f"mmrl: building {manifest_path} from {build_config} (the manifest is missing)")
    overrides = [f"out={manifest_path.parent}", "workers=0", "progress=false"]
    build(load_config(BuildConfig, build_config, overrides))
    if not manifest_path.is_file():
        raise UserError(f"building {build_config} did not write {manifest_path}")
