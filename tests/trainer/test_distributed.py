"""Two CPU processes over gloo match one process on the same global batch.

Launch: `torchrun --nproc_per_node 2` with ACCELERATE_USE_CPU=1, so `Accelerator()` runs MULTI_CPU over gloo.
(`accelerate launch --cpu --num_processes 2` in accelerate 1.15 starts a single process on a machine without MPI,
so it is not what this test uses.) The ranks take different halves of each global batch of 4 samples; the
completions are the same as one process's because sampling is seeded per sample; gradients are averaged by DDP.
"""

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from mmrl.config.loader import save_config
from mmrl.rl.loop import train
from mmrl.testing import free_port, metrics_rows


def test_two_gloo_processes_match_one_process(make_config, tmp_path):
    overrides = {"training.batch_size": 4, "training.micro_batch_size": 4, "grpo.beta": 0.04, "grpo.loss_type": "grpo"}
    single = train(make_config(out="single", **overrides))

    config = make_config(out="double", **overrides)
    config_dir = save_config(config, tmp_path / "cfg").parent
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
               str(free_port()), "-m", "mmrl.cli", "train", str(config_dir / "config.yaml")]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    double = Path(config.training.output_dir)

    # both processes wrote their RNG state; only the main one wrote the model and the metrics
    checkpoint = double / "checkpoint-000002"
    assert {p.name for p in checkpoint.glob("rng_state_*.pt")} == {"rng_state_0.pt", "rng_state_1.pt"}
    one, two = metrics_rows(single.run_dir), metrics_rows(double)
    for a, b in zip(one, two, strict=True):
        assert b["groups_used"] == 4  # gathered from both ranks: 2 samples each
        assert a["reward"] == b["reward"] and a["completion_length/mean"] == b["completion_length/mean"]
        for key in ("loss", "grad_norm", "kl"):
            assert abs(a[key] - b[key]) <= 1e-5 + 1e-4 * abs(a[key]), key
    weights = load_file(checkpoint / "model" / "model.safetensors")
    for name, param in single.unwrapped_model.state_dict().items():
        if name in weights:
            torch.testing.assert_close(weights[name], param, atol=1e-5, rtol=1e-4, msg=name)
