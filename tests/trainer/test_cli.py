"""`mmrl train` as a command: arguments, bad configs, and the shipped configs."""

from pathlib import Path

import pytest

from mmrl.cli import main as cli_main
from mmrl.config.loader import ConfigError, load_config
from mmrl.config.schema import TrainConfig
from mmrl.rl.loop import parse_args

ROOT = Path(__file__).resolve().parents[2]


def test_overrides_and_flags(tmp_path):
    config = parse_args(
        [str(ROOT / "configs" / "debug_tiny.yaml"), "grpo.beta=0", "--max-steps", "3", "--output-dir", str(tmp_path)]
    )
    assert config.grpo.beta == 0.0 and config.training.max_steps == 3
    assert config.training.output_dir == str(tmp_path)


def test_bad_config_fails_before_any_model_loads(tmp_path, capsys):
    # the model path does not exist and has no tiny_family: loading it would fail differently, later
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"model:\n  name_or_path: {tmp_path / 'nope'}\n  tiny_family: null\ngrpo:\n  los_type: grpo\n")
    assert cli_main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'grpo.los_type'; did you mean 'loss_type'?" in err
    assert not (tmp_path / "nope").exists()
    with pytest.raises(ConfigError, match="grpo.num_iterations must be at least 1"):
        parse_args([str(ROOT / "configs" / "debug_tiny.yaml"), "grpo.num_iterations=0"])
    with pytest.raises(ConfigError, match="training.max_steps"):
        parse_args([str(ROOT / "configs" / "debug_tiny.yaml"), "--max-steps", "-1"])


def test_batch_must_split_over_processes_and_manifest_must_exist(make_config, tmp_path):
    from mmrl.errors import UserError
    from mmrl.rl.loop import train

    config = make_config(**{"data.train_manifest": str(tmp_path / "none" / "manifest.jsonl")})
    with pytest.raises(UserError, match="manifest not found"):
        train(config)


@pytest.mark.parametrize("name", ["debug_tiny.yaml"])
def test_shipped_trainer_configs_load(name):
    config = load_config(TrainConfig, ROOT / "configs" / name)
    assert config.training.build_config and config.model.tiny_family


def test_accelerate_configs_parse():
    import yaml

    kinds = {}
    for path in sorted((ROOT / "configs" / "accelerate").glob("*.yaml")):
        kinds[path.stem] = yaml.safe_load(path.read_text())["distributed_type"]
    assert kinds == {"ddp": "MULTI_GPU", "fsdp": "FSDP", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED"}


def test_a_run_builds_its_missing_model_and_manifest(tmp_path):
    """What configs/debug_tiny.yaml does from a clean checkout: the tiny model (model.tiny_family) and the manifest
    (training.build_config) are made first, then the run trains (here one step, into tmp_path)."""
    build = tmp_path / "synthetic.yaml"
    build.write_text("source:\n  kind: synthetic\n  num_items: 4\n")
    manifest = tmp_path / "data" / "train" / "manifest.jsonl"
    argv = [
        "train", str(ROOT / "configs" / "debug_tiny.yaml"), f"model.name_or_path={tmp_path / 'tiny'}",
        f"data.train_manifest={manifest}", f"training.build_config={build}", "training.batch_size=2",
        "rollout.max_completion_length=8", "--max-steps", "1", "--output-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    assert cli_main(argv) == 0
    assert (tmp_path / "tiny" / "config.json").is_file() and manifest.is_file()
    assert (tmp_path / "run" / "checkpoint-000001" / "trainer_state.json").is_file()
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 1
