"""The typed config loader: overrides apply, typos and bad values give one clear error naming the key."""

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from mmrl.config.loader import ConfigError, load_config, parse_override, save_config


@dataclass
class Inner:
    lr: float = 1e-5
    kind: Literal["a", "b"] = "a"
    names: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError("inner.lr must be positive")


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    steps: int = 3
    path: str | None = None
    flag: bool = False


ROOT = Path(__file__).resolve().parents[1]


def test_yaml_and_overrides_apply(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("inner:\n  lr: 0.5\n  names: [x]\nsteps: 7\n")
    out = load_config(Outer, cfg, ["inner.kind=b", "steps=9", "flag=true", "path=null", "inner.lr=2"])
    assert out.inner.lr == 2.0 and isinstance(out.inner.lr, float)
    assert out.inner.kind == "b"
    assert out.inner.names == ["x"]
    assert out.steps == 9
    assert out.flag is True
    assert out.path is None


def test_unknown_key_names_the_nearest():
    with pytest.raises(ConfigError, match=r"unknown key 'inner.lrr'; did you mean 'lr'\?"):
        load_config(Outer, None, ["inner.lrr=1"])
    with pytest.raises(ConfigError, match=r"unknown key 'stpes'; did you mean 'steps'\?"):
        load_config(Outer, None, ["stpes=1"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("steps=1.5", "steps: expected an integer"),
        ("steps=true", "steps: expected an integer"),
        ("flag=3", "flag: expected true or false"),
        ("inner.kind=c", "inner.kind: 'c' is not one of 'a', 'b'"),
        ("inner.lr=-1", "inner.lr must be positive"),
        ("inner.names=x", "inner.names: expected a list"),
        ("inner=3", "inner: expected a mapping"),
        ("novalue", "not of the form key=value"),
    ],
)
def test_bad_values_fail_with_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, None, [override])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Outer, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(Outer, bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Outer, listy)


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("steps: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(Outer, evil)


def test_override_values_are_yaml():
    assert parse_override("a.b=1e-6") == (["a", "b"], 1e-6)
    assert parse_override("x=[1, 2]") == (["x"], [1, 2])
    assert parse_override("x=hello world") == (["x"], "hello world")
    assert parse_override("x=") == (["x"], "")


def test_saved_config_reloads_identically(tmp_path):
    config = load_config(Outer, None, ["steps=4", "inner.names=[p, q]"])
    path = save_config(config, tmp_path / "run")
    assert load_config(Outer, path) == config


def _mmrl(*args):
    return subprocess.run([sys.executable, "-m", "mmrl.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_config_show_prints_resolved_config(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("training:\n  learning_rate: 3.0e-6\n")
    result = _mmrl("config", "show", str(cfg), "rollout.num_generations=8")
    assert result.returncode == 0, result.stderr
    assert "learning_rate: 3.0e-06" in result.stdout
    assert "num_generations: 8" in result.stdout
    assert "trust_remote_code: false" in result.stdout


def test_cli_config_show_error_is_one_line(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("training:\n  learning_rat: 3.0e-6\n")
    result = _mmrl("config", "show", str(cfg))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "mmrl config: error: unknown key 'training.learning_rat'; did you mean 'learning_rate'?"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("config", "kind", "expected"),
    [
        ("configs/debug_tiny.yaml", "train", "num_generations:"),
        ("configs/sft_synthetic.yaml", "sft", "counterfactual_fraction:"),
        ("configs/build/synthetic.yaml", "build", "single_object_fraction: 0.34"),
    ],
)
def test_cli_config_show_resolves_every_kind(config, kind, expected):
    result = _mmrl("config", "show", str(ROOT / config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"# {kind} config")
    assert any(line.strip().startswith(expected) for line in lines)


def test_cli_config_show_checks_each_kind_against_its_schema():
    # `grpo` belongs to training configs, not to build configs: an error names the key
    result = _mmrl("config", "show", str(ROOT / "configs/build/synthetic.yaml"), "grpo.beta=0")
    assert result.returncode == 2 and "grpo" in result.stderr and "Traceback" not in result.stderr


def test_cli_unknown_command_suggests():
    result = _mmrl("trian")
    assert result.returncode == 2
    assert "did you mean 'train'?" in result.stderr


def test_train_config_templates_must_agree():
    from mmrl.config.schema import TrainConfig

    with pytest.raises(ConfigError, match=r"data.template \(direct\) and rewards.template \(think\) must match"):
        load_config(TrainConfig, None, ["data.template=direct"])
