"""Generation in lockstep (FSDP: every forward is a collective): with `synced`, every process decodes until all
processes' rows have stopped, so both run the same number of forwards; a process whose rows stopped early still
returns its own completions (padding after the stop token, masked out).

Two real gloo processes: rank 0's model stops at once (a large bias on `<|im_end|>`), rank 1's runs to the length
cap. Unsynced, the two make different numbers of forwards (which under FSDP would hang); synced, the same number.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from mmrl.testing import free_port

SCRIPT = r"""
import json, sys
from types import SimpleNamespace
import torch
import torch.distributed as dist
from transformers import AutoProcessor
from mmrl.rollout.hf import generate_completions
from mmrl.testing import biased_model, chat_batch, shapes_image

dist.init_process_group("gloo")
rank, path, out = dist.get_rank(), sys.argv[1], sys.argv[2]
processor = AutoProcessor.from_pretrained(path)
im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
model = biased_model(path, im_end, 60.0 if rank == 0 else -60.0)  # rank 0 stops at once, rank 1 never
image = shapes_image(56, 56, [("circle", "red", (8, 8, 40, 40))])
inputs = chat_batch(processor, [image], questions=("What color is the circle?",))
config = SimpleNamespace(temperature=1.0, top_p=1.0, top_k=0, max_completion_length=6, share_prompt=True)
result = {}
for synced in (False, True):
    calls = []
    handle = model.register_forward_pre_hook(lambda *args: calls.append(1))
    rollout = generate_completions(model, processor, inputs, 2, config, seeds=[rank], synced=synced)
    handle.remove()
    result[str(synced)] = {"forwards": len(calls), "lengths": rollout.completion_mask.sum(-1).tolist()}
    dist.barrier()
json.dump(result, open(f"{out}/rank{rank}.json", "w"))
"""


def test_synced_decoding_keeps_processes_in_step(tiny_model_dirs, tmp_path):
    script = tmp_path / "synced.py"
    script.write_text(SCRIPT)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
               str(free_port()), str(script), str(tiny_model_dirs("qwen2_5_vl")), str(tmp_path)]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    # unsynced: rank 0 prefills and stops (1 forward), rank 1 prefills and decodes to the cap of 6 (6 forwards)
    assert (rank0["False"]["forwards"], rank1["False"]["forwards"]) == (1, 6)
    # synced: both make rank 1's 6 forwards; rank 0's completions still end at their stop token
    assert rank0["True"]["forwards"] == rank1["True"]["forwards"] == 6
    assert rank0["True"]["lengths"] == [1, 1] and rank1["True"]["lengths"] == [6, 6]
