"""Checkpoints that a crash cannot corrupt, and exact resume.

A checkpoint is the folder `RUN/checkpoint-000012/`:

- `model/`: a Hugging Face folder (safetensors, with the in-memory parameter names so that it loads back into the
  same model exactly), plus the processor when given; with LoRA, the adapter folder that peft writes;
- `optimizer.pt`, `scheduler.pt`: their `state_dict()`s;
- `rng_state_<rank>.pt`: python, numpy and torch RNG states of each process;
- whatever `extra_state` writes (the trainer: DeepSpeed / FSDP per-rank engine state in `accelerate/`);
- `trainer_state.json`: step, data position and whatever the loop adds, and the size and sha256 of every other
  file of the folder; written last, it is the completion marker.

Atomicity: everything is written into `RUN/.tmp-checkpoint-000012/`, every file is fsynced, and only then is the
folder renamed to its final name (a rename is atomic on POSIX). A crash at any moment leaves either the previous
checkpoints and a stale `.tmp-*` folder (ignored, removed by the next save) or the new complete one. Saving a step
that exists already (rerunning a finished run) renames the old folder to `.tmp-old-checkpoint-N` first; until the
new one is in place that folder counts as step N, and the next save renames it back or removes it.

Damage after the fact (a truncated, zeroed or bit-flipped file, a missing one, a garbage marker) is caught by
`mmrl.io.recovery`, which falls back to the newest intact checkpoint with one warning
line, and refuses with one error line when none is intact. Non-weight state is read back with
`torch.load(weights_only=True)`: no arbitrary unpickling.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
OLD_PREFIX = ".tmp-old-"  # a complete checkpoint moved aside while the same step is saved again
_NAME = re.compile(rf"^(?:{re.escape(OLD_PREFIX)})?{PREFIX}(\d+)$")


def _noop() -> None:
    return None


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f"{PREFIX}{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (a folder without trainer_state.json is not one).

    A `.tmp-old-checkpoint-N` stands for step N when `checkpoint-N` is absent: a kill between the two renames of
    a re-save left it there, complete."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = {}
    for path in run_dir.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_dir() and (path / STATE_FILE).is_file():
            step = int(match.group(1))
            if step not in found or not path.name.startswith(OLD_PREFIX):
                found[step] = path
    return [found[step] for step in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def rng_state() -> dict[str, Any]:
    """The RNG states as plain containers and tensors, so `torch.load(weights_only=True)` reads them."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under root to disk, so the rename never exposes half-written data."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:  # streamed in blocks: weights of many GB never sit in memory whole
        return hashlib.file_digest(handle, "sha256").hexdigest()


def file_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file under `folder` but the marker itself, by path relative to `folder`."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / STATE_FILE)
    return {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in files}


def _clean_stale(run_dir: Path) -> None:
    """Remove what killed saves left: half-written `.tmp-checkpoint-*`, and `.tmp-old-*` copies whose step is back
    in place (one whose step is missing is the only complete copy: it is renamed back)."""
    for stale in run_dir.glob(f".tmp-{PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in run_dir.glob(f"{OLD_PREFIX}{PREFIX}*"):
        final = run_dir / old.name[len(OLD_PREFIX) :]
        if final.exists() or not (old / STATE_FILE).is_file():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.rename(final)


def _is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config")


def save_model(model: torch.nn.Module, out_dir: Path, processor: Any = None, state_dict: dict | None = None) -> None:
    """The model (or its LoRA adapters) as a loadable Hugging Face folder of safetensors.

    `state_dict` is the gathered full state under ZeRO-3 / FSDP (from `accelerator.get_state_dict`)."""
    kwargs: dict[str, Any] = {"safe_serialization": True}
    if state_dict is not None:
        kwargs["state_dict"] = state_dict
    if not _is_peft(model):
        # in-memory names: the folder loads back into this very model, and from_pretrained reads it as well
        kwargs["save_original_format"] = False
    model.save_pretrained(out_dir, **kwargs)
    if processor is not None:
        processor.save_pretrained(out_dir)


def load_model_weights(model: torch.nn.Module, model_dir: Path) -> None:
    """Load what `save_model` wrote into the same (unwrapped) model; any key not accounted for is an error."""
    from safetensors.torch import load_file

    if _is_peft(model):
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, load_file(model_dir / "adapter_model.safetensors"))
        unexpected = list(getattr(result, "unexpected_keys", []))
        if unexpected:
            raise RuntimeError(f"adapter checkpoint {model_dir} has unexpected keys: {unexpected[:5]}")
        return
    state: dict[str, torch.Tensor] = {}
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors files in {model_dir}")
    for path in files:
        state.update(load_file(path))
    result = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"checkpoint {model_dir} does not match the model: missing {missing[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}"
        )


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    trainer_state: dict[str, Any] | None = None,
    processor: Any = None,
    total_limit: int = 0,
    process_index: int = 0,
    is_main_process: bool = True,
    barrier: Callable[[], None] = _noop,
    model_state_dict: dict | None = None,
    extra_state: Callable[[Path], None] | None = None,
) -> Path:
    """Write checkpoint `step` atomically; every process calls this (each writes its RNG state).

    `model` is the unwrapped model; `total_limit` > 0 keeps only that many newest checkpoints; `extra_state(folder)`
    is called on every process with the temporary folder, before the marker (its files are checksummed too)."""
    run_dir = Path(run_dir)
    final = checkpoint_dir(run_dir, step)
    tmp = run_dir / f".tmp-{final.name}"
    if is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        _clean_stale(run_dir)
        tmp.mkdir()
    barrier()
    torch.save(rng_state(), tmp / f"rng_state_{process_index}.pt")
    if extra_state is not None:
        extra_state(tmp)
    if is_main_process:
        save_model(model, tmp / "model", processor, model_state_dict)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    barrier()
    if is_main_process:
        state = {"step": step, **(trainer_state or {}), "files": file_manifest(tmp)}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2), encoding="utf-8")
        _fsync_tree(tmp)
        if final.exists():  # the same step saved again (e.g. the end of a run that was resumed at its last step)
            old = run_dir / f"{OLD_PREFIX}{final.name}"
            final.rename(old)  # from here until the next rename, list_checkpoints reads `old` as this step
            _fsync_dir(run_dir)
            tmp.rename(final)
            _fsync_dir(run_dir)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
        _fsync_dir(run_dir)
        if total_limit > 0:
            for path in list_checkpoints(run_dir)[:-total_limit]:
                shutil.rmtree(path)
    barrier()
    return final


@dataclass
class ResumedState:
    step: int
    trainer_state: dict[str, Any] = field(default_factory=dict)


def load_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    process_index: int = 0,
    restore_rng: bool = True,
) -> ResumedState:
    """Restore what `save_checkpoint` wrote into live objects; returns the step and the loop's state."""
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
    state = json.loads(state_file.read_text(encoding="utf-8"))
    if model is not None:
        load_model_weights(model, path / "model")
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    if scheduler is not None:
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    if restore_rng:
        rng_file = path / f"rng_state_{process_index}.pt"
        if not rng_file.is_file():  # fewer processes saved than resume: reuse rank 0's, the run is then not exact
            rng_file = path / "rng_state_0.pt"
        set_rng_state(torch.load(rng_file, weights_only=True))
    step = int(state.pop("step"))
    state.pop("files", None)
    return ResumedState(step=step, trainer_state=state)
