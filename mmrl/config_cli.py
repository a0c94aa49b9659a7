"""`mmrl config show CONFIG [key=value ...]`: print the resolved training config, or the error."""

from __future__ import annotations

import argparse

from mmrl.config import dump_yaml, load_config


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmrl config", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    show = sub.add_parser("show", help="print the resolved config")
    show.add_argument("config", help="YAML config file")
    show.add_argument("overrides", nargs="*", help="key=value overrides, e.g. training.learning_rate=1e-6")
    args = parser.parse_args(argv)
    from mmrl.train_config import TrainConfig

    config = load_config(TrainConfig, args.config, args.overrides)
    print(dump_yaml(config), end="")
    return 0
