"""`mmrl sft` on two CPU processes over gloo (DDP through Accelerate, as `scripts/train.sh` launches it) trains as one
process does: each process takes half of every batch, the loss is the mean over both processes' tokens, and one
optimiser step is made per step. Same losses within 1e-5 over 3 steps, same final weights within 1e-5."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from mmrl.config.loader import load_config, save_config
from mmrl.config.schema import SFTConfig
from mmrl.rl.sft import sft
from mmrl.testing import free_port, metrics_rows

from .conftest import BASE


def test_two_processes_match_one(tiny_model_dirs, synthetic_manifest, tmp_path):
    def config(out: str) -> SFTConfig:
        keys = ("model.min_pixels", "model.max_pixels", "training.seed", "training.resume", "logging.tensorboard")
        values = {k: BASE[k] for k in keys if k in BASE} | {
            "model.name_or_path": str(tiny_model_dirs("qwen2_5_vl")), "data.train_manifest": str(synthetic_manifest),
            "training.output_dir": str(tmp_path / out), "training.batch_size": 4, "training.micro_batch_size": 1,
            "training.max_steps": 3, "training.learning_rate": 1e-3, "rollout.max_completion_length": 24,
        }  # fmt: skip
        return load_config(SFTConfig, None, [f"{k}={v}" for k, v in values.items()])

    single = sft(config("single"), progress=False)
    double = config("double")
    config_dir = save_config(double, tmp_path / "cfg").parent
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MMRL_ENGINE": "ddp"}
    command = [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
               str(free_port()), "-m", "mmrl.cli", "sft", str(config_dir / "config.yaml")]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = Path(double.training.output_dir)
    info = json.loads((run_dir / "run_info.json").read_text())
    assert (info["engine"], info["num_processes"], info["passes_per_step"]) == ("ddp", 2, 2)
    one, two = metrics_rows(single.run_dir), metrics_rows(run_dir)
    assert len(one) == len(two) == 3
    for a, b in zip(one, two, strict=True):
        assert a["tokens"] == b["tokens"]  # the step's tokens of both processes
        assert abs(a["loss"] - b["loss"]) <= 1e-5, (a["loss"], b["loss"])
        assert abs(a["grad_norm"] - b["grad_norm"]) <= 1e-5 + 1e-4 * a["grad_norm"]
    weights = load_file(run_dir / "checkpoint-000003" / "model" / "model.safetensors")
    for name, param in single.model.state_dict().items():
        if name in weights:
            torch.testing.assert_close(weights[name], param, atol=1e-5, rtol=1e-4, msg=name)
