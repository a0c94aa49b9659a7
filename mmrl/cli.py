"""The `mmrl` command: one subcommand per stage of the flow.

Each subcommand lives in its own module as `main(argv) -> int` and is imported only when it runs, so
`mmrl --help` starts fast. A `UserError` (bad config, missing file, bad argument) prints one line and exits 2.
"""

from __future__ import annotations

import difflib
import importlib
import sys

from mmrl import __version__
from mmrl.errors import UserError

# name -> ("module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "tiny-model": ("mmrl.models.tiny:main", "build a tiny random-initialised Qwen-VL model with a real processor"),
    "config": ("mmrl.config.show:main", "show the resolved config: mmrl config show CONFIG [key=value ...]"),
    "build": ("data_builders.build:main", "build a manifest with positive / counterfactual / random-masked variants"),
    "preview": ("data_builders.preview:main", "draw a contact sheet of a manifest's items and their variants"),
    "train": ("mmrl.rl.loop:main", "GRPO training: mmrl train CONFIG [key=value ...]"),
    "sft": ("mmrl.rl.sft:main", "cold-start SFT in the recipe's completion template: mmrl sft CONFIG [key=value ...]"),
    "export": (
        "mmrl.io.export:main",
        "a run's checkpoint as a plain Hugging Face folder: mmrl export RUN_DIR --out DIR",
    ),
    "infer": (
        "mmrl.eval.infer:main",
        "answer and boxes for one image: mmrl infer MODEL_DIR --image PATH --question TEXT",
    ),
    "eval": ("mmrl.eval.evaluate:main", "greedy evaluation per variant: mmrl eval MODEL_DIR MANIFEST [--out DIR]"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: mmrl COMMAND [args ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `mmrl COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name in ("-V", "--version"):
        print(__version__)
        return 0
    if name not in COMMANDS:
        near = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        print(f"mmrl: unknown command '{name}'{hint} (run `mmrl --help`)", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(rest) or 0)
    except UserError as err:
        print(f"mmrl {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mmrl {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
