"""metrics.jsonl survives what a bad day does to it: torn and garbage lines, and kills while a resume trims it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmrl.io.logger import MetricsLogger

ROOT = Path(__file__).resolve().parents[2]


def _steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_torn_and_garbage_lines_are_dropped_with_one_warning(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": 1, "reward": 0.5}), "{not json", json.dumps([2]), json.dumps({"step": 2})]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'\xff\xfe\n{"step": 3, "rew')  # the last write was cut
    logger = MetricsLogger(tmp_path, tensorboard=False, resume_step=5)
    logger.log(3, {"reward": 1.0})
    assert _steps(path) == [1, 2, 3]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mmrl: warning: {path}: 4 torn or unreadable line(s) dropped (first: line 2)"]
    # the repaired file resumes quietly
    MetricsLogger(tmp_path, tensorboard=False, resume_step=3)
    assert capsys.readouterr().err == "" and _steps(path) == [1, 2, 3]


def test_a_kill_before_the_rename_leaves_the_old_history(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 6)))
    before = path.read_bytes()

    def killed(*args):
        raise KeyboardInterrupt("kill -9 before the rename")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        MetricsLogger(tmp_path, tensorboard=False, resume_step=2)
    assert path.read_bytes() == before
    monkeypatch.undo()
    MetricsLogger(tmp_path, tensorboard=False, resume_step=2)  # the stale .tmp of the killed try is overwritten
    assert _steps(path) == [1, 2]


def test_kill_9_during_the_trim_of_a_large_file_never_loses_history(tmp_path):
    """A real SIGKILL at several moments while a resume trims a ~40 MB metrics.jsonl: the file is always either the
    whole old history or exactly the trimmed one, and its lines all parse."""
    path = tmp_path / "metrics.jsonl"
    pad = "x" * 400
    path.write_text("".join(json.dumps({"step": s, "note": pad}) + "\n" for s in range(1, 100_001)))
    whole = path.stat().st_size
    script = "import sys; from mmrl.io.logger import MetricsLogger as M; "
    script += "M(sys.argv[1], tensorboard=False, resume_step=60000)"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    outcomes = set()
    for delay in (0.05, 0.1, 0.15, 0.2, 0.3, 0.5):
        proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=env)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        steps = _steps(path)
        assert steps == list(range(1, len(steps) + 1)) and len(steps) in (100_000, 60_000), len(steps)
        outcomes.add(len(steps))
        if len(steps) == 60_000:  # trimmed already: put the whole history back for the next kill
            path.write_text("".join(json.dumps({"step": s, "note": pad}) + "\n" for s in range(1, 100_001)))
    assert 100_000 in outcomes  # at least one kill landed inside the trim (it takes ~0.35 s here)
    assert path.stat().st_size == whole
