"""GRPO's machinery learns, not luck: on a trivial task where the sampled policy starts near chance, its mean reward
rises, for three seeds.

The task: one plain image, the question "Pick a color.", a direct answer, reward 1 for exactly "red" (the `accuracy`
term: exact match, 0 otherwise). A short SFT on the same prompt with "red" and "blue" as targets half the time each
makes the sampled policy a near-fair coin between the two words (checked: the first steps' mean reward lies in
[0.2, 0.8]); GRPO then has reward variance in almost every group and must move the coin towards "red".
"""

import json

import pytest

from mmrl.config.loader import load_config
from mmrl.config.schema import TrainConfig
from mmrl.rl.loop import train
from mmrl.rl.sft import SFTConfig, sft


def _manifest(folder, answers):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (84, 84), (200, 200, 200)).save(folder / "plain.png")
    lines = [
        {"id": f"s{i}", "group_id": f"g{i}", "variant": "positive", "image": "plain.png", "image_size": [84, 84],
         "question": "Pick a color.", "answer": answer, "task": "vqa", "source": "trivial"}
        for i, answer in enumerate(answers)
    ]  # fmt: skip
    (folder / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder / "manifest.jsonl"


COMMON = ["model.min_pixels=7056", "model.max_pixels=7056", "data.template=direct", "rewards.template=direct",
          "rewards.terms={accuracy: 1.0}", "rollout.max_completion_length=4", "training.resume=never",
          "training.vision_lr_scale=0.0001", "logging.tensorboard=false"]  # fmt: skip


@pytest.fixture(scope="module")
def coin_model(tiny_model_dirs, tmp_path_factory):
    """A model whose sampled answer to "Pick a color." is "red" or "blue", about half and half."""
    root = tmp_path_factory.mktemp("coin")
    manifest = _manifest(root / "sft_data", ["red", "blue"] * 8)
    config = load_config(SFTConfig, None, [*COMMON,
        f"model.name_or_path={tiny_model_dirs('qwen2_5_vl')}", f"data.train_manifest={manifest}",
        f"training.output_dir={root / 'sft'}", "training.max_steps=40", "training.batch_size=16",
        "training.micro_batch_size=16", "training.learning_rate=3e-3", "training.seed=0",
    ])  # fmt: skip
    return sft(config, progress=False).checkpoint / "model", _manifest(root / "grpo_data", ["red"] * 16)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grpo_mean_reward_rises_from_chance(coin_model, tmp_path, seed):
    model_dir, manifest = coin_model
    config = load_config(TrainConfig, None, [*COMMON,
        f"model.name_or_path={model_dir}", "model.tiny_family=null", f"data.train_manifest={manifest}",
        f"training.output_dir={tmp_path / 'grpo'}", "training.max_steps=16", "training.warmup_steps=2",
        "training.batch_size=4", "training.micro_batch_size=32", "rollout.num_generations=8",
        "training.learning_rate=1e-3", f"training.seed={seed}", "grpo.beta=0.0", "logging.samples_steps=0",
    ])  # fmt: skip
    train(config)
    rewards = [json.loads(line)["reward"] for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert 0.2 <= first <= 0.8, f"the policy does not start near chance: {rewards}"
    assert last >= first + 0.15, f"seed {seed}: mean reward did not rise: {rewards}"
