"""Damaged checkpoints: every file damaged every way is caught, resume and export fall back to the newest intact
checkpoint with one warning line, and refuse with one error line when none is intact; a kill inside a re-save of
the same step loses nothing."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from mmrl.errors import UserError
from mmrl.io import checkpoint
from mmrl.io.recovery import intact_checkpoint, resume, verify_checkpoint


def _model(model_dir, seed):
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    with torch.no_grad():
        model.lm_head.weight.add_(seed)  # each step's weights differ, so the test can tell which one was loaded
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return model, optimizer, scheduler


@pytest.fixture(scope="module")
def two_steps(tiny_model_dirs, tmp_path_factory):
    """A run folder with intact checkpoints 1 and 2 (copied per test, then damaged)."""
    run = tmp_path_factory.mktemp("two_steps")
    for step in (1, 2):
        model, optimizer, scheduler = _model(tiny_model_dirs("qwen2_5_vl"), step)
        checkpoint.save_checkpoint(
            run, step, model=model, optimizer=optimizer, scheduler=scheduler, trainer_state={"data": {"i": step}}
        )
    return run


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _zero(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


def _flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - 7] ^= 0x10  # inside the tensor data: the file stays loadable, only the checksum can tell
    path.write_bytes(bytes(data))


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00\xffnot json{")


DAMAGES = [
    ("model/model.safetensors", _truncate, "model/model.safetensors is"),
    ("model/model.safetensors", _zero, "model/model.safetensors checksum mismatch"),
    ("model/model.safetensors", _flip_bit, "model/model.safetensors checksum mismatch"),
    ("model/model.safetensors", _remove, "model/model.safetensors missing"),
    ("optimizer.pt", _truncate, "optimizer.pt is"),
    ("optimizer.pt", _zero, "optimizer.pt checksum mismatch"),
    ("scheduler.pt", _remove, "scheduler.pt missing"),
    ("rng_state_0.pt", _remove, "rng_state_0.pt missing"),
    ("trainer_state.json", _empty, "trainer_state.json unreadable"),
    ("trainer_state.json", _garbage, "trainer_state.json unreadable"),
    ("model", _remove, "missing"),
]


@pytest.mark.parametrize(("rel", "damage", "reason"), DAMAGES, ids=[f"{r}-{d.__name__[1:]}" for r, d, _ in DAMAGES])
def test_resume_falls_back_past_each_damage_with_one_warning(
    two_steps, tiny_model_dirs, tmp_path, capsys, rel, damage, reason
):
    run = tmp_path / "run"
    shutil.copytree(two_steps, run)
    assert verify_checkpoint(run / "checkpoint-000002") is None
    damage(run / "checkpoint-000002" / rel)
    assert reason in verify_checkpoint(run / "checkpoint-000002")

    model, optimizer, scheduler = _model(tiny_model_dirs("qwen2_5_vl"), 0)
    capsys.readouterr()
    path, state = resume(run, model=model, optimizer=optimizer, scheduler=scheduler)
    err = capsys.readouterr().err.strip().splitlines()
    assert path.name == "checkpoint-000001" and state.step == 1 and state.trainer_state == {"data": {"i": 1}}
    expected, _, _ = _model(tiny_model_dirs("qwen2_5_vl"), 1)
    assert torch.equal(model.lm_head.weight, expected.lm_head.weight)
    assert len(err) == 1 and err[0].startswith("mmrl: warning: skipped damaged checkpoint-000002 (")
    assert reason in err[0] and err[0].endswith("using checkpoint-000001")


def test_every_checkpoint_damaged_is_one_error_never_a_fresh_start(two_steps, tiny_model_dirs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_steps, run)
    _zero(run / "checkpoint-000002" / "optimizer.pt")
    _garbage(run / "checkpoint-000001" / "trainer_state.json")
    model, optimizer, scheduler = _model(tiny_model_dirs("qwen2_5_vl"), 0)
    with pytest.raises(UserError, match=r"no intact checkpoint in .*checkpoint-000002 \(optimizer.pt checksum") as info:
        resume(run, model=model, optimizer=optimizer, scheduler=scheduler)
    assert "checkpoint-000001 (trainer_state.json unreadable" in str(info.value) and "\n" not in str(info.value)
    assert resume(tmp_path / "empty", model=model) is None  # no checkpoint at all: a fresh start is right


def test_a_legacy_checkpoint_that_fails_to_load_is_skipped(two_steps, tiny_model_dirs, tmp_path, capsys):
    """A marker without checksums (written before they existed) is trusted until loading fails."""
    run = tmp_path / "run"
    shutil.copytree(two_steps, run)
    marker = run / "checkpoint-000002" / "trainer_state.json"
    marker.write_text(json.dumps({"step": 2, "data": {"i": 2}}))
    _truncate(run / "checkpoint-000002" / "optimizer.pt")
    model, optimizer, scheduler = _model(tiny_model_dirs("qwen2_5_vl"), 0)
    path, _ = resume(run, model=model, optimizer=optimizer, scheduler=scheduler)
    assert path.name == "checkpoint-000001"
    assert "checkpoint-000002 (cannot be loaded (" in capsys.readouterr().err


def test_export_picks_the_newest_intact_checkpoint(two_steps, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(two_steps, run)
    _flip_bit(run / "checkpoint-000002" / "model" / "model.safetensors")
    assert intact_checkpoint(run) == run / "checkpoint-000001"
    assert "skipped damaged checkpoint-000002 (model/model.safetensors checksum mismatch)" in capsys.readouterr().err
    from mmrl.io.export import export

    with pytest.raises(UserError, match="checkpoint-000002 is damaged: model/model.safetensors checksum mismatch"):
        export(run, tmp_path / "out", run / "checkpoint-000002")


def test_kill_inside_a_resave_keeps_the_step_and_the_next_save_cleans_up(tiny_model_dirs, tmp_path, monkeypatch):
    """save_total_limit=1 and the last step saved again (a rerun of a finished run): a kill between moving the old
    folder aside and putting the new one in place must leave that step resumable, not a run that starts over."""
    model, optimizer, scheduler = _model(tiny_model_dirs("qwen2_5_vl"), 3)
    checkpoint.save_checkpoint(tmp_path, 3, model=model, optimizer=optimizer, scheduler=scheduler, total_limit=1)
    real_rename = Path.rename

    def killed_on_the_second_rename(self, target):
        if self.name.startswith(".tmp-checkpoint-"):
            raise KeyboardInterrupt("kill -9 between the two renames")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", killed_on_the_second_rename)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(tmp_path, 3, model=model, optimizer=optimizer, scheduler=scheduler, total_limit=1)
    monkeypatch.setattr(Path, "rename", real_rename)
    assert not (tmp_path / "checkpoint-000003").exists()
    assert checkpoint.latest_checkpoint(tmp_path) == tmp_path / ".tmp-old-checkpoint-000003"

    fresh, fresh_opt, fresh_sched = _model(tiny_model_dirs("qwen2_5_vl"), 0)
    path, state = resume(tmp_path, model=fresh, optimizer=fresh_opt, scheduler=fresh_sched)
    assert state.step == 3 and torch.equal(fresh.lm_head.weight, model.lm_head.weight)
    checkpoint.save_checkpoint(tmp_path, 3, model=model, optimizer=optimizer, scheduler=scheduler, total_limit=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-000003"]
    assert verify_checkpoint(tmp_path / "checkpoint-000003") is None


def test_a_stale_old_copy_is_renamed_back_when_its_step_is_missing(tiny_model_dirs, tmp_path):
    model, optimizer, _ = _model(tiny_model_dirs("qwen2_5_vl"), 1)
    checkpoint.save_checkpoint(tmp_path, 1, model=model, optimizer=optimizer)
    (tmp_path / "checkpoint-000001").rename(tmp_path / ".tmp-old-checkpoint-000001")
    (tmp_path / ".tmp-checkpoint-000001").mkdir()  # the half-written new copy
    checkpoint.save_checkpoint(tmp_path, 2, model=model, optimizer=optimizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-000001", "checkpoint-000002"]
