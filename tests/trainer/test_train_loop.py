"""The training loop end to end on tiny models: what changes, what doesn't, resume, families, LoRA, faults."""

import json
import math

import pytest
import torch

from mmrl.rl import loop as train_module
from mmrl.rl.loop import train
from mmrl.rl.update import micro_batch_loss

REQUIRED = [
    "step",
    "reward",
    "kl",
    "loss",
    "grad_norm",
    "time/generate",
    "time/rewards",
    "time/logprobs",
    "time/update",
]


def _initial_state(config):
    from mmrl.models.loading import load_model_and_processor

    model, _, _ = load_model_and_processor(config.model)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _metrics(run):
    return [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_steps_change_every_trainable_param_and_keep_frozen_ones(make_config):
    config = make_config(**{"model.freeze_vision": True, "grpo.beta": 0.04, "logging.samples_steps": 1})
    before = _initial_state(config)
    run = train(config)
    params = dict(run.unwrapped_model.named_parameters())
    frozen = [n for n, p in params.items() if not p.requires_grad]
    assert frozen and all(n.startswith("model.visual.") and ".merger." not in n for n in frozen)
    for name, param in params.items():
        if param.requires_grad:
            assert not torch.equal(param, before[name]), f"{name} did not change"
        else:
            assert torch.equal(param, before[name]), f"frozen {name} changed"
    rows = _metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert set(REQUIRED) <= set(row) and {"reward/answer", "reward/length"} <= set(row)
        # every metric finite (JSON null would mean NaN): with beta > 0 the KL is computed too
        assert all(isinstance(v, int | float) and math.isfinite(v) for v in row.values()), row
        assert row["clip/low"] == row["clip/high"] == 0.0  # one iteration: rho = 1, nothing clipped
    assert rows[0]["kl"] == 0.0 and rows[1]["kl"] > 0  # the policy starts at the reference, then leaves it
    assert (run.run_dir / "checkpoint-000002" / "model" / "model.safetensors").is_file()
    page = (run.run_dir / "samples" / "step_000002.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == 8  # 2 samples x 4 completions, images embedded
    assert (run.run_dir / "config.yaml").is_file()


def test_one_micro_batch_of_four_equals_four_of_one(tiny_model_dirs):
    """The same 4 completion rows: one forward/backward of 4, or 4 of 1 accumulated, give the same gradients."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mmrl.config.loader import load_config
    from mmrl.config.schema import TrainConfig
    from mmrl.testing import chat_batch, shapes_image

    path = tiny_model_dirs("qwen2_5_vl")
    processor = AutoProcessor.from_pretrained(path)
    images = [shapes_image(56, 56, [("circle", "red", (8, 8, 30, 30))]), shapes_image(84, 56, [])]
    prompts = chat_batch(processor, images)
    rows = {k: v for k, v in prompts.items()}
    ids = torch.randint(0, 200, (2, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    advantages = torch.tensor([0.7, -1.2])
    for loss_type in ("grpo", "dr_grpo", "dapo"):
        config = load_config(TrainConfig, None, [f"grpo.loss_type={loss_type}", "grpo.beta=0.04"])
        grads = []
        for size in (2, 1):
            torch.manual_seed(0)
            model = AutoModelForImageTextToText.from_pretrained(path).train()
            ref = torch.full(ids.shape, -5.0)
            for start in range(0, 2, size):
                sl = slice(start, start + size)
                batch = {
                    "prompt_inputs": _rows(model, rows, list(range(2))[sl]),
                    "completion_ids": ids[sl],
                    "completion_mask": mask[sl],
                }
                loss, _ = micro_batch_loss(
                    model, batch, advantages[sl], None, ref[sl], config, num_micro_batches=2 // size,
                    global_num_tokens=float(mask.sum()), num_processes=1,
                )  # fmt: skip
                loss.backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        assert grads[0].keys() == grads[1].keys()
        for name in grads[0]:
            torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4, msg=f"{loss_type} {name}")


def _rows(model, prompts, rows):
    """Prompt rows `rows` of a batch with one image per row (what the loop's group_rows builds)."""
    from mmrl.models.inputs import repeat_prompt_inputs

    per_row = [repeat_prompt_inputs(model, _select(prompts, r), 1) for r in rows]
    width = max(p["input_ids"].shape[1] for p in per_row)

    def pad(key, value):
        return torch.cat([torch.nn.functional.pad(p[key], (width - p[key].shape[1], 0), value=value) for p in per_row])

    return {
        "input_ids": pad("input_ids", 0),
        "attention_mask": pad("attention_mask", 0),
        "mm_token_type_ids": pad("mm_token_type_ids", 0),
        "pixel_values": torch.cat([p["pixel_values"] for p in per_row]),
        "image_grid_thw": torch.cat([p["image_grid_thw"] for p in per_row]),
    }


def _select(prompts, r):
    patches = prompts["image_grid_thw"].prod(-1).tolist()
    start = sum(patches[:r])
    keep = prompts["attention_mask"][r].bool()
    return {
        "input_ids": prompts["input_ids"][r : r + 1, keep],
        "attention_mask": prompts["attention_mask"][r : r + 1, keep],
        "mm_token_type_ids": prompts["mm_token_type_ids"][r : r + 1, keep],
        "pixel_values": prompts["pixel_values"][start : start + patches[r]],
        "image_grid_thw": prompts["image_grid_thw"][r : r + 1],
    }


def test_loop_micro_batch_size_does_not_change_the_step(make_config):
    # the same rollouts (sampling is seeded per sample), cut into 1 micro-batch of 8 or 8 of 1
    whole = _metrics(train(make_config(out="a", **{"training.max_steps": 1, "training.micro_batch_size": 8})))[0]
    parts = _metrics(train(make_config(out="b", **{"training.max_steps": 1, "training.micro_batch_size": 1})))[0]
    assert parts["reward"] == whole["reward"]
    assert parts["loss"] == pytest.approx(whole["loss"], abs=1e-6)
    assert parts["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-4)


def test_resume_after_a_crash_is_bitwise_equal_to_an_uninterrupted_run(make_config, monkeypatch):
    common = {
        "training.max_steps": 6, "training.save_steps": 3, "training.resume": "auto", "training.warmup_steps": 2,
        "training.lr_scheduler": "cosine", "grpo.beta": 0.04, "grpo.num_iterations": 2,
    }  # fmt: skip
    straight = train(make_config(out="straight", **common))
    straight_params = {n: p.detach().clone() for n, p in straight.unwrapped_model.named_parameters()}

    real_collect = train_module.collect_groups

    def crash_at_step_4(run):  # a kill after checkpoint 3 was written, in the middle of step 4
        if run.step == 3:
            raise KeyboardInterrupt("killed")
        return real_collect(run)

    monkeypatch.setattr(train_module, "collect_groups", crash_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        train(make_config(out="resumed", **common))
    assert [p.name for p in (straight.run_dir.parent / "resumed").glob("checkpoint-*")] == ["checkpoint-000003"]
    steps_run = []

    def counting(run):
        steps_run.append(run.step + 1)
        return real_collect(run)

    monkeypatch.setattr(train_module, "collect_groups", counting)
    resumed = train(make_config(out="resumed", **common))
    assert resumed.step == 6 and steps_run == [4, 5, 6]  # it continued, it did not start over
    for name, param in resumed.unwrapped_model.named_parameters():
        assert torch.equal(param, straight_params[name]), name
    rows, straight_rows = _metrics(resumed), _metrics(straight)
    assert [r["step"] for r in rows] == list(range(1, 7))
    for a, b in zip(rows, straight_rows, strict=True):
        assert (a["reward"], a["loss"], a["grad_norm"], a["lr"]) == (b["reward"], b["loss"], b["grad_norm"], b["lr"])


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_each_family_trains(make_config, family):
    config = make_config(family, **{"grpo.beta": 0.04})
    before = _initial_state(config)
    run = train(config)
    changed = [n for n, p in run.unwrapped_model.named_parameters() if not torch.equal(p, before[n])]
    assert sorted(set(before) - set(changed)) == []
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["kl"]) for r in _metrics(run))


def test_lora_trains_and_saves_adapters(make_config):
    config = make_config(**{"model.lora": True, "model.lora_r": 4, "grpo.beta": 0.04})
    before = _initial_state(config)
    run = train(config)
    trainable = {n for n, p in run.unwrapped_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    for name, param in run.unwrapped_model.named_parameters():
        if name in trainable and "lora_B" in name:
            assert not torch.equal(param, before[name]), name  # B starts at zero: it moved
        elif name not in trainable:
            assert torch.equal(param, before[name]), name
    files = {p.name for p in (run.run_dir / "checkpoint-000002" / "model").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= files and "model.safetensors" not in files
    assert _metrics(run)[1]["kl"] > 0  # the reference (adapters off) differs from the policy after a step


def test_bad_samples_are_skipped_and_counted(make_config, synthetic_manifest, tmp_path):
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(synthetic_manifest.parent / "images", folder / "images")
    records = [json.loads(line) for line in synthetic_manifest.read_text().splitlines()[:6]]
    records[1]["image"] = "images/gone.png"  # the image is gone since the build
    broken = folder / "manifest.jsonl"
    broken.write_text("\n".join(json.dumps(r) for r in records) + '\n{"id": "bad"}\n')  # and a malformed line
    config = make_config(**{
        "data.train_manifest": str(broken), "data.shuffle": False, "training.batch_size": 2, "training.max_steps": 3,
    })  # fmt: skip
    with pytest.warns(UserWarning, match="skipping a sample"):
        run = train(config)
    assert run.manifest.rejects and run.manifest.rejects[0][0] == 7  # the bad line, by number
    rows = _metrics(run)
    assert [r["samples_skipped"] for r in rows] == [1.0, 0.0, 0.0]  # sample 1 of the first batch
    assert all(math.isfinite(r["loss"]) for r in rows)


def test_a_nan_loss_skips_the_update_and_keeps_the_weights(make_config, monkeypatch):
    # fault injection: the loss of step 2 turns NaN (as an overflow would); its update must not touch the weights
    config = make_config(**{"training.max_steps": 2})
    real = train_module.algo.aggregate_loss
    calls = {"n": 0}
    snapshot = {}

    def nan_on_second_step(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 2 else loss

    real_update = train_module.policy_update

    def remember_weights(run, *args):
        snapshot.update({n: p.detach().clone() for n, p in run.unwrapped_model.named_parameters()})
        return real_update(run, *args)

    monkeypatch.setattr(train_module.algo, "aggregate_loss", nan_on_second_step)
    monkeypatch.setattr(train_module, "policy_update", remember_weights)
    with pytest.warns(UserWarning, match="update skipped"):
        run = train(config)
    rows = _metrics(run)
    assert [r["updates_skipped"] for r in rows] == [0.0, 1.0]
    for name, param in run.unwrapped_model.named_parameters():
        assert torch.equal(param, snapshot[name]), name  # step 2 changed nothing
        assert torch.isfinite(param).all()


def test_zero_spread_groups_are_dropped_and_refilled(make_config):
    # no completion is near 4000 characters: the length reward is 0 for all, every group has zero spread
    config = make_config(**{
        "rewards.terms": "{length: 1.0}", "rewards.length_max_chars": 4000, "grpo.drop_zero_spread": True,
        "grpo.max_refill_rounds": 2, "training.max_steps": 1,
    })  # fmt: skip
    row = _metrics(train(config))[0]
    assert row["frac_zero_spread"] == 1.0
    assert row["groups_generated"] == 6 and row["groups_used"] == 1  # 1 + 2 refill rounds of 2 samples
    assert row["reward_std"] == 0.0 and row["advantage/abs_mean"] == 0.0
    assert row["loss"] == 0.0  # only a zero-advantage group was left to keep the step going
    assert row["completion_length/mean"] > 0
    # with spread (the default length reward here), nothing is refilled
    row = _metrics(train(make_config(out="b", **{"grpo.drop_zero_spread": True, "training.max_steps": 1})))[0]
    assert row["frac_zero_spread"] == 0.0 and row["groups_generated"] == row["groups_used"] == 2


def test_eval_on_a_held_out_manifest_per_variant(make_config, synthetic_manifest):
    config = make_config(**{"data.eval_manifest": str(synthetic_manifest), "training.max_steps": 1})
    row = _metrics(train(config))[0]
    for variant in ("positive", "counterfactual", "random_masked", "all"):
        assert math.isfinite(row[f"eval/{variant}/reward"]) and math.isfinite(row[f"eval/{variant}/answer"])
