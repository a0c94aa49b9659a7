"""`mmrl config show CONFIG [key=value ...] [--kind train|sft|build]`: print the resolved config, or the error.

The kind of config is read from its top-level sections unless `--kind` says it: `source:` is a build config
(`mmrl build`), `sft:` an SFT config (`mmrl sft`), anything else a training config (`mmrl train`). Each is resolved
against its own schema, so a key that belongs to another kind is an error naming the nearest valid key.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from data_builders.config import BuildConfig
from mmrl.config.loader import dump_yaml, load_config, read_yaml
from mmrl.config.schema import SFTConfig, TrainConfig

SCHEMAS: dict[str, type] = {"train": TrainConfig, "sft": SFTConfig, "build": BuildConfig}


def config_kind(path: str | Path) -> str:
    """'build', 'sft' or 'train', from the config's top-level sections."""
    sections = read_yaml(path)
    if "source" in sections:
        return "build"
    return "sft" if "sft" in sections else "train"


def resolve(path: str | Path, overrides: list[str] | None = None, kind: str | None = None) -> Any:
    """The config at `path`, with `overrides`, built and validated by the schema of its kind."""
    return load_config(SCHEMAS[kind or config_kind(path)], path, overrides or [])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmrl config", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    show = sub.add_parser("show", help="print the resolved config")
    show.add_argument("config", help="YAML config file (train, sft or build)")
    show.add_argument("overrides", nargs="*", help="key=value overrides, e.g. training.learning_rate=1e-6")
    show.add_argument("--kind", choices=sorted(SCHEMAS), help="the config's kind (default: read from its sections)")
    args = parser.parse_args(argv)
    kind = args.kind or config_kind(args.config)
    print(f"# {kind} config ({SCHEMAS[kind].__name__})")
    print(dump_yaml(resolve(args.config, args.overrides, kind)), end="")
    return 0
