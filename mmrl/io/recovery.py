"""Which checkpoint a run resumes or exports from, when some are damaged.

`save_checkpoint` records the size and sha256 of every file in the completion marker (`trainer_state.json`).
After the fact a file can still be truncated, zeroed, bit-flipped or deleted (a full disk, a bad copy, a person
tidying up), or the marker itself be garbage. Resume and export check the newest checkpoint against its marker and
fall back to the newest intact one with one warning line naming what was wrong; when every checkpoint is damaged
they stop with one error line rather than start over from scratch while checkpoints exist.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmrl.errors import UserError
from mmrl.io.checkpoint import STATE_FILE, ResumedState, list_checkpoints, load_checkpoint, sha256_file


def verify_checkpoint(path: str | Path) -> str | None:
    """None when the checkpoint is intact, else what is wrong with it in a few words.

    Checkpoints written before the marker held checksums are checked for their model folder only."""
    path = Path(path)
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{STATE_FILE} unreadable ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        return f"{STATE_FILE} holds no step"
    files = state.get("files")
    if files is None:
        model_dir = path / "model"
        ok = model_dir.is_dir() and any(model_dir.glob("*.safetensors"))
        return None if ok else "model/ missing or without safetensors"
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        return f"{STATE_FILE} has a malformed file list"
    for rel, expected in files.items():
        file = path / rel
        if not file.is_file():
            return f"{rel} missing"
        size = file.stat().st_size
        if size != expected.get("size"):
            return f"{rel} is {size} bytes, expected {expected.get('size')}"
        if sha256_file(file) != expected.get("sha256"):
            return f"{rel} checksum mismatch"
    return None


def _warn(message: str) -> None:
    print(f"mmrl: warning: {message}", file=sys.stderr)


def intact_checkpoint(run_dir: str | Path, warn: bool = True) -> Path | None:
    """The newest checkpoint that verifies (None when the run has none at all); a UserError when every one is
    damaged, so a damaged run never passes for an empty one."""
    return _fallback(run_dir, lambda path: None, warn)[0]


def resume(run_dir: str | Path, *, process_index: int = 0, **load_kwargs: Any) -> tuple[Path, ResumedState] | None:
    """Load the newest intact checkpoint of `run_dir` into the live objects (`load_checkpoint`'s arguments);
    None when the run has no checkpoint. A damaged one is skipped with one warning line (rank 0 only)."""
    path, state = _fallback(
        run_dir, lambda p: load_checkpoint(p, process_index=process_index, **load_kwargs), process_index == 0
    )
    return None if path is None else (path, state)


def _fallback(run_dir: str | Path, load: Callable[[Path], Any], warn: bool) -> tuple[Path | None, Any]:
    candidates = list_checkpoints(run_dir)
    problems: list[str] = []
    for path in reversed(candidates):
        reason = verify_checkpoint(path)
        if reason is None:
            try:
                result = load(path)
            except Exception as err:  # a file that verifies yet fails to load is damage too
                reason = f"cannot be loaded ({type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]})"
            else:
                if problems and warn:
                    _warn(f"skipped damaged {'; '.join(problems)}; using {path.name}")
                return path, result
        problems.append(f"{path.name} ({reason})")
    if problems:
        raise UserError(
            f"no intact checkpoint in {run_dir}: {'; '.join(problems)}; move the run folder away to start over"
        )
    return None, None
