"""A resumed run must be the run that was started: its config is checked against the saved one.

`RUN/config.yaml` holds the resolved config the run was started (or last resumed) with. When `training.resume=auto`
finds a checkpoint, the new config is compared with it key by key:

- keys that only steer bookkeeping (logging, evaluation and save cadence, `max_steps`, where the vLLM server is,
  the output folder's spelling) may change: the run goes on with one note line listing them;
- any other change (seed, batch sizes, learning rate, data, model, rewards, ...) would make the resumed run a
  different one than an uninterrupted run of either config: it is refused with the diff in one error line,
  unless each changed key (or its section) is listed in `training.resume_allow_changes`.

Each resumed segment's config is kept: before `config.yaml` is replaced by a different one, the old one is copied
to `RUN/config_history/config-before-step-N.yaml`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from mmrl.config.loader import save_config, to_dict
from mmrl.errors import UserError
from mmrl.io.checkpoint import latest_checkpoint

CONFIG_FILE = "config.yaml"
HISTORY_DIR = "config_history"

# keys that do not change what an uninterrupted run computes (prefix match on dotted keys)
HARMLESS = (
    "logging.",
    "training.max_steps",
    "training.save_steps",
    "training.save_total_limit",
    "training.eval_steps",
    "training.output_dir",
    "training.resume",  # also training.resume_allow_changes
    "training.build_config",
    "data.eval_manifest",
    "rollout.vllm_host",
    "rollout.vllm_port",
    "rollout.vllm_timeout",
    "rollout.vllm_concurrency",
    "sft.max_seconds",
)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix.rstrip("."): data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def config_changes(
    saved: dict[str, Any], current: dict[str, Any], defaults: dict[str, Any] | None = None
) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (saved value, current value) for every key whose value differs; `defaults` fills the keys
    the saved config lacks (added to mmrl since the run started: the run had their default)."""
    filled = {section: dict(values) for section, values in saved.items() if isinstance(values, dict)}
    for section, values in (defaults or {}).items():  # fields only: a mapping's value (rewards.terms) is not merged
        if isinstance(values, dict) and isinstance(filled.get(section), dict):
            filled[section] = {**values, **filled[section]}
    old, new = _flatten({**saved, **filled}), _flatten(current)
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def _allowed(key: str, allow: list[str]) -> bool:
    return key.startswith(HARMLESS) or any(key == a or key.startswith(a.rstrip(".") + ".") for a in allow)


def _show(changes: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())


def check_resume_config(config: Any, run_dir: str | Path, is_main_process: bool = True) -> None:
    """Refuse (UserError) a resume whose config changed in a key that breaks exactness; note the harmless ones.

    A no-op unless `training.resume=auto` and the run folder holds a checkpoint and its config.yaml."""
    path = Path(run_dir) / CONFIG_FILE
    latest = latest_checkpoint(run_dir) if config.training.resume == "auto" else None
    if latest is None or not path.is_file():
        return
    resume_step = int(latest.name.rsplit("-", 1)[1])
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{path} is unreadable ({type(err).__name__}); cannot check the resumed config") from None
    if not isinstance(saved, dict):
        raise UserError(f"{path} is not a config mapping; cannot check the resumed config")
    changes = config_changes(saved, to_dict(config), to_dict(type(config)()))
    allow = list(config.training.resume_allow_changes)
    refused = {k: v for k, v in changes.items() if not _allowed(k, allow)}
    if refused:
        keys = ",".join(refused)
        raise UserError(
            f"the config differs from the one {run_dir} was trained with up to step {resume_step} ({path}): "
            f"{_show(refused)}; an exact resume needs the same values: restore them, choose another "
            f"training.output_dir, or allow the change with training.resume_allow_changes=[{keys}]"
        )
    if changes and is_main_process:
        print(f"mmrl: note: resuming at step {resume_step} with changed {_show(changes)}", file=sys.stderr)


def save_run_config(config: Any, run_dir: str | Path, resume_step: int) -> Path:
    """Write config.yaml; a different one already there (an earlier segment's) is kept in config_history/."""
    path = Path(run_dir) / CONFIG_FILE
    if path.is_file() and yaml.safe_load(path.read_text(encoding="utf-8")) != to_dict(config):
        history = Path(run_dir) / HISTORY_DIR
        history.mkdir(exist_ok=True)
        shutil.copyfile(path, history / f"config-before-step-{resume_step:06d}.yaml")
    return save_config(config, run_dir)
