"""DeepSpeed ZeRO-2 / ZeRO-3 for real, on two CPU processes over gloo, against one plain process.

Launch: `torchrun --nproc_per_node 2` with Accelerate's DeepSpeed variables (what `scripts/train.sh` exports without
GPUs); `mmrl.rl.dist.make_accelerator` takes DeepSpeed's path on gloo. The global batch of 4 samples x 4 completions
splits into 2 samples a rank, 2 micro-batches of 4 completions each: the engine must accumulate them into one
optimiser step per training step (it stepped on every micro-batch before), clip at training.max_grad_norm, and give
the single process's losses and weights within 1e-5 over 3 steps.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmrl.config.loader import save_config
from mmrl.rl.loop import train
from mmrl.testing import free_port, metrics_rows

pytest.importorskip("deepspeed", reason="DeepSpeed is installed by scripts/setup_env.sh test")

OVERRIDES = {
    "training.batch_size": 4,
    "training.micro_batch_size": 4,
    "training.max_steps": 3,
    "grpo.beta": 0.04,
    "grpo.loss_type": "grpo",
}


def launch(config, tmp_path: Path, engine: str, *args: str) -> subprocess.CompletedProcess:
    """`mmrl train` on 2 CPU processes with `engine` (zero2 / zero3), as scripts/train.sh starts it."""
    config_dir = save_config(config, tmp_path / f"cfg-{engine}-{len(args)}").parent
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {
        **os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
        "ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": engine[-1], "MMRL_ENGINE": engine,
    }  # fmt: skip
    env.pop("ACCELERATE_USE_CPU", None)
    command = [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
               str(free_port()), "-m", "mmrl.cli", "train", str(config_dir / "config.yaml"), *args]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.parametrize("engine", ["zero2", "zero3"])
def test_two_deepspeed_processes_match_one_process(engine, make_config, tmp_path):
    single_run = train(make_config(out="single", **OVERRIDES))
    config = make_config(out=engine, **OVERRIDES)
    launch(config, tmp_path, engine)
    run_dir = Path(config.training.output_dir)

    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["engine"] == engine and info["num_processes"] == 2
    # 2 samples x 4 completions a rank in micro-batches of 4: 2 passes, accumulated by the engine
    assert info["deepspeed"] == {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2,
                                 "gradient_clipping": 1.0, "zero_stage": int(engine[-1])}  # fmt: skip
    one, two = metrics_rows(single_run.run_dir), metrics_rows(run_dir)
    assert len(one) == len(two) == 3
    for a, b in zip(one, two, strict=True):
        assert b["optimizer_steps"] == 1.0  # the engine's own count: one step per training step
        assert a["reward"] == b["reward"]
        for key in ("loss", "grad_norm", "kl"):
            assert abs(a[key] - b[key]) <= 1e-5 + 1e-5 * abs(a[key]), (key, a[key], b[key])
    # every rank saved its own optimiser shard and RNG state inside the checkpoint
    checkpoint = run_dir / "checkpoint-000003"
    shards = sorted(p.name for p in (checkpoint / "accelerate" / "pytorch_model").glob("*optim_states.pt"))
    assert len(shards) == 2, shards
    assert {p.name for p in checkpoint.glob("rng_state_*.pt")} == {"rng_state_0.pt", "rng_state_1.pt"}
    assert not (checkpoint / "optimizer.pt").exists()  # rank 0's shard alone would restore wrongly
    # the exported model is the consolidated full-precision weights
    weights = load_file(checkpoint / "model" / "model.safetensors")
    expected = single_run.unwrapped_model.state_dict()
    assert set(expected) - set(weights) <= {"lm_head.weight"}  # tied to the embeddings in the tiny model
    for name in weights.keys() & expected.keys():
        param = expected[name]
        assert weights[name].dtype == torch.float32
        torch.testing.assert_close(weights[name], param, atol=1e-5, rtol=1e-5, msg=name)


def test_zero3_stop_and_resume_equals_an_uninterrupted_run(make_config, tmp_path):
    """Checkpoint every step, stop after step 2, resume to 3: every rank's optimiser shard and RNG come back."""
    whole = make_config(out="whole", **OVERRIDES)
    launch(whole, tmp_path, "zero3")
    parts = make_config(out="parts", **{**OVERRIDES, "training.resume": "auto", "training.save_steps": 1})
    launch(parts, tmp_path, "zero3", "--max-steps", "2")
    resumed = launch(parts, tmp_path, "zero3")
    assert "resumed from" in resumed.stdout and "(step 2)" in resumed.stdout
    a, b = metrics_rows(Path(whole.training.output_dir)), metrics_rows(Path(parts.training.output_dir))
    assert [r["step"] for r in b] == [1, 2, 3]
    for x, y in zip(a, b, strict=True):
        assert (x["loss"], x["grad_norm"], x["kl"]) == (y["loss"], y["grad_norm"], y["kl"])
    wa = load_file(Path(whole.training.output_dir) / "checkpoint-000003" / "model" / "model.safetensors")
    wb = load_file(Path(parts.training.output_dir) / "checkpoint-000003" / "model" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def test_train_sh_refuses_fsdp_on_cpu_processes_in_one_line():
    """No GPU: FSDP cannot run (Accelerate enables it for GPU-type process groups only); never a silent DDP run."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "MMRL_ACCELERATE": "fsdp", "MMRL_NUM_PROCESSES": "2"}
    script = Path(__file__).resolve().parents[2] / "scripts" / "train.sh"
    result = subprocess.run(["bash", str(script), "configs/debug_tiny.yaml"], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "FSDP needs GPUs" in result.stderr


def test_eval_device_defaults_to_the_cpu_in_fp32_without_a_gpu():
    from mmrl.errors import UserError
    from mmrl.eval.evaluate import resolve_device

    if torch.cuda.is_available():
        assert resolve_device("auto") == (torch.device("cuda"), torch.bfloat16)
    else:
        assert resolve_device("auto") == (torch.device("cpu"), torch.float32)
        with pytest.raises(UserError, match="no GPU is visible"):
            resolve_device("cuda:0")
    with pytest.raises(UserError, match="--device must be"):
        resolve_device("tpu-ish")
