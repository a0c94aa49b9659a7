"""Parity with TRL 1.16's GRPOTrainer, on the vision-language path itself.

Method: one tiny Qwen2.5-VL (hidden 64) and two image prompts; G = 3 completions each are sampled with mmrl's
rollout. Both sides then get the same completions, the same advantages, and the same old-policy and reference
log-probs (the true ones plus fixed noise, so ratios leave 1 and the clip and the KL act). TRL's side is its own
`GRPOTrainer._compute_loss` on the inputs dict it builds in `_generate_and_score_completions` (prompt_ids,
prompt_mask, completion_ids, completion_mask, advantages, num_items_in_batch, old/ref_per_token_logps,
pixel_values, image_grid_thw, num_images, mm_token_type_ids), run on a copy of the model that TRL patches with its
fused LM head (temperature 0.9 included). mmrl's side is `mmrl.rl.update.micro_batch_loss`, which the training loop
calls. Loss and every parameter's gradient must agree to 1e-5.
"""

import copy

import pytest
import torch

from mmrl.models.inputs import repeat_prompt_inputs
from mmrl.models.logprobs import completion_logprobs
from mmrl.rl import algo
from mmrl.rl.update import micro_batch_loss

G = 3
MAX_COMPLETION = 10
TEMPERATURE = 0.9


@pytest.fixture(scope="module")
def rollout_batch(tiny_model_dirs):
    import numpy as np
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mmrl.config.schema import RolloutConfig
    from mmrl.rollout.hf import generate_completions

    path = tiny_model_dirs("qwen2_5_vl")
    processor = AutoProcessor.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(path).train()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)) for _ in range(2)]
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "text", "text": q}, {"type": "image"}]}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for q in ("What color is the circle?", "How many?")  # different lengths: the left padding matters
    ]
    prompts = dict(processor(images=images, text=texts, padding=True, padding_side="left", return_tensors="pt"))
    rollout = generate_completions(
        model, processor, prompts, G, RolloutConfig(num_generations=G, max_completion_length=MAX_COMPLETION)
    )
    # a random model rarely stops: end two completions early (stop token, then padding) so the masks differ by row
    stop, pad = (processor.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>"))
    for row, end in ((1, 3), (4, 6)):
        rollout.completion_ids[row, end] = stop
        rollout.completion_ids[row, end + 1 :] = pad
        rollout.completion_mask[row, end + 1 :] = 0
    rows = repeat_prompt_inputs(model, prompts, G)  # (B*G, P) prompt rows, images repeated, as TRL holds them
    with torch.no_grad():
        logps = completion_logprobs(model, rows, rollout.completion_ids, rollout.completion_mask, TEMPERATURE)
    noise = torch.Generator().manual_seed(1)
    mask = rollout.completion_mask.float()
    old = (logps + 0.3 * torch.randn(logps.shape, generator=noise)) * mask
    ref = (logps + 0.2 * torch.randn(logps.shape, generator=noise)) * mask
    rewards = torch.tensor([1.0, 0.0, 0.5, -1.0, 0.0, 2.0])
    return {"model": model, "processor": processor, "rows": rows, "rollout": rollout, "old": old, "ref": ref,
            "rewards": rewards}  # fmt: skip


def _trl_inputs(batch, advantages):
    rows, rollout = batch["rows"], batch["rollout"]
    mm = rows["mm_token_type_ids"]
    return {
        "prompt_ids": rows["input_ids"],
        "prompt_mask": rows["attention_mask"],
        "completion_ids": rollout.completion_ids,
        "completion_mask": rollout.completion_mask,
        "advantages": advantages,
        "num_items_in_batch": rollout.completion_mask.sum(),
        "old_per_token_logps": batch["old"],
        "ref_per_token_logps": batch["ref"],
        "pixel_values": rows["pixel_values"],
        "image_grid_thw": rows["image_grid_thw"],
        "num_images": [1] * rows["input_ids"].shape[0],
        "mm_token_type_ids": torch.cat([mm, mm.new_zeros(rollout.completion_ids.shape)], dim=1),
    }


def _mmrl_config(loss_type, level, beta, scale):
    from mmrl.config.loader import load_config
    from mmrl.config.schema import TrainConfig

    return load_config(TrainConfig, None, [
        f"grpo.loss_type={loss_type}", f"grpo.importance_sampling_level={level}", f"grpo.beta={beta}",
        "grpo.epsilon_low=0.2", "grpo.epsilon_high=0.28", f"grpo.scale_rewards={scale}",
        f"rollout.temperature={TEMPERATURE}", f"rollout.max_completion_length={MAX_COMPLETION}",
        f"rollout.num_generations={G}",
    ])  # fmt: skip


@pytest.mark.parametrize(
    ("loss_type", "level", "beta", "scale"),
    [
        ("grpo", "token", 0.04, "group"),
        ("bnpo", "token", 0.0, "batch"),
        ("dr_grpo", "token", 0.04, "none"),
        ("dapo", "token", 0.04, "group"),
        ("grpo", "sequence", 0.0, "group"),
        ("dapo", "sequence", 0.04, "batch"),
    ],
)
def test_loss_and_gradients_equal_trl(rollout_batch, tmp_path, loss_type, level, beta, scale):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    from trl.trainer.utils import nanstd

    rewards = rollout_batch["rewards"]
    advantages = algo.group_advantages(rewards, G, scale).advantages
    # TRL's std (inline in its trainer) is its nanstd: unbiased, the same as ours on finite rewards
    assert torch.allclose(nanstd(rewards.view(-1, G), dim=1), rewards.view(-1, G).std(dim=1))

    ours = copy.deepcopy(rollout_batch["model"])
    theirs = copy.deepcopy(rollout_batch["model"])
    args = GRPOConfig(
        output_dir=str(tmp_path), loss_type=loss_type, importance_sampling_level=level, beta=beta, epsilon=0.2,
        epsilon_high=0.28, scale_rewards=scale, num_generations=G, per_device_train_batch_size=2 * G,
        max_completion_length=MAX_COMPLETION, temperature=TEMPERATURE, report_to=[], use_cpu=True, bf16=False,
        gradient_checkpointing=False,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=theirs, reward_funcs=lambda completions, **kw: [0.0] * len(completions), args=args,
        train_dataset=Dataset.from_dict({"prompt": ["x"] * 6}), processing_class=rollout_batch["processor"],
    )  # fmt: skip
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's own loop, which is not run here
    trainer.model.train()
    trl_loss = trainer._compute_loss(trainer.model, _trl_inputs(rollout_batch, advantages))
    trl_loss.backward()

    rollout = rollout_batch["rollout"]
    batch = {"prompt_inputs": rollout_batch["rows"], "completion_ids": rollout.completion_ids,
             "completion_mask": rollout.completion_mask}  # fmt: skip
    loss, stats = micro_batch_loss(
        ours, batch, advantages, rollout_batch["old"], rollout_batch["ref"] if beta else None,
        _mmrl_config(loss_type, level, beta, scale), num_micro_batches=1,
        global_num_tokens=float(rollout.completion_mask.sum()), num_processes=1,
    )  # fmt: skip
    loss.backward()

    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-5)
    assert loss.item() != 0.0
    # the clip acted somewhere (old log-probs are noisy), so the comparison covers the clipped branch
    assert stats["clip/region"].item() > 0 or level == "sequence"
    theirs_params = dict(trainer.model.named_parameters())
    compared = 0
    for name, param in ours.named_parameters():
        other = theirs_params[name].grad
        assert param.grad is not None and other is not None, name
        torch.testing.assert_close(param.grad, other, atol=1e-5, rtol=1e-4, msg=name)
        compared += 1
    assert compared == len(theirs_params)
    # TRL's logged clip fraction and KL are the same quantities as ours
    logged = trainer._metrics["train"]
    assert stats["clip/region"].item() / stats["clip_units"].item() == pytest.approx(
        logged["clip_ratio/region_mean"][-1], abs=1e-6
    )
    if beta:
        assert stats["kl"].item() / stats["tokens"].item() == pytest.approx(logged["kl"][-1], abs=1e-6)
