"""Atomic checkpoints: round trip, a crash in the middle of a write, keeping the last N, RNG states, LoRA."""

import random

import numpy as np
import pytest
import torch

from mmrl.io import checkpoint


def _load(path):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(path)


def _trained(model_dir, steps=2):
    """A tiny model with an AdamW and a schedule that have taken real steps (non-trivial optimizer state)."""
    torch.manual_seed(0)
    model = _load(model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    for _ in range(steps):
        ids = torch.randint(0, 200, (2, 6))
        loss = model.model.language_model(input_ids=ids).last_hidden_state.pow(2).mean()
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, optimizer, scheduler


def test_round_trip_restores_weights_optimizer_scheduler_rng_and_state(tiny_model_dirs, tmp_path):
    model, optimizer, scheduler = _trained(tiny_model_dirs("qwen2_5_vl"))
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = checkpoint.save_checkpoint(
        tmp_path, 2, model=model, optimizer=optimizer, scheduler=scheduler, trainer_state={"data": {"index": 7}}
    )
    assert path.name == "checkpoint-000002" and (path / "model" / "model.safetensors").is_file()
    expected_draws = (random.random(), np.random.rand(), torch.rand(1).item())

    fresh, fresh_opt, fresh_sched = _trained(tiny_model_dirs("qwen2_5_vl"), steps=0)
    resumed = checkpoint.load_checkpoint(path, model=fresh, optimizer=fresh_opt, scheduler=fresh_sched)
    assert resumed.step == 2 and resumed.trainer_state == {"data": {"index": 7}}
    # the RNG continues exactly where it was when the checkpoint was written
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected_draws
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert fresh_sched.state_dict()["last_epoch"] == 2 and fresh_sched.get_last_lr() == scheduler.get_last_lr()
    saved, loaded = optimizer.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k]["exp_avg"], loaded[k]["exp_avg"]) for k in saved)
    # the model folder is a plain Hugging Face folder too
    assert torch.equal(_load(path / "model").lm_head.weight, model.lm_head.weight)


def test_crash_during_a_write_leaves_the_previous_checkpoint_usable(tiny_model_dirs, tmp_path):
    model, optimizer, scheduler = _trained(tiny_model_dirs("qwen2_5_vl"), steps=1)
    checkpoint.save_checkpoint(tmp_path, 1, model=model, optimizer=optimizer, scheduler=scheduler)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    class CrashingScheduler(torch.optim.lr_scheduler.LambdaLR):
        """Dies after the model and the optimizer are on disk, as a killed process would."""

        def state_dict(self):
            raise KeyboardInterrupt("killed while writing the checkpoint")

    crashing = CrashingScheduler(optimizer, lambda s: 1.0)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(tmp_path, 2, model=model, optimizer=optimizer, scheduler=crashing)
    # the half-written step 2 sits in a temporary folder that is not a checkpoint
    assert (tmp_path / ".tmp-checkpoint-000002" / "model").is_dir()
    assert checkpoint.latest_checkpoint(tmp_path) == tmp_path / "checkpoint-000001"
    fresh, fresh_opt, fresh_sched = _trained(tiny_model_dirs("qwen2_5_vl"), steps=0)
    assert checkpoint.load_checkpoint(tmp_path / "checkpoint-000001", model=fresh, optimizer=fresh_opt).step == 1
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())
    # the next save clears the debris
    checkpoint.save_checkpoint(tmp_path, 3, model=model, optimizer=optimizer, scheduler=scheduler)
    assert not list(tmp_path.glob(".tmp-*"))
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["checkpoint-000001", "checkpoint-000003"]


def test_keeps_the_last_n_and_overwrites_the_same_step(tiny_model_dirs, tmp_path):
    model, optimizer, scheduler = _trained(tiny_model_dirs("qwen2_5_vl"), steps=0)
    for step in (1, 2, 3, 3):
        checkpoint.save_checkpoint(tmp_path, step, model=model, optimizer=optimizer, total_limit=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["checkpoint-000002", "checkpoint-000003"]
    assert checkpoint.latest_checkpoint(tmp_path / "missing") is None


def test_lora_checkpoint_holds_adapters_and_restores_them(tiny_model_dirs, tmp_path):
    from peft import LoraConfig, get_peft_model

    def lora_model():
        torch.manual_seed(0)
        return get_peft_model(_load(tiny_model_dirs("qwen2_vl")), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))

    model = lora_model()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.add_(0.01)
    path = checkpoint.save_checkpoint(tmp_path, 5, model=model)
    files = sorted(p.name for p in (path / "model").iterdir())
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files
    assert "model.safetensors" not in files  # adapters only, not the frozen base
    fresh = lora_model()
    checkpoint.load_checkpoint(path, model=fresh)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_load_rejects_an_incomplete_folder(tmp_path):
    (tmp_path / "checkpoint-000004").mkdir()
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        checkpoint.load_checkpoint(tmp_path / "checkpoint-000004")
    assert checkpoint.list_checkpoints(tmp_path) == []
