"""`mmrl export` of a LoRA run: the adapters are merged into the base model, and the plain folder gives the
adapted model's logits (not the base model's)."""

import torch

from mmrl.config.loader import load_config
from mmrl.io.export import export
from mmrl.rl.sft import SFTConfig, sft


def test_lora_run_exports_merged_weights(tiny_model_dirs, build_synthetic, tmp_path):
    from transformers import AutoModelForImageTextToText

    manifest = build_synthetic(tmp_path / "data", 2, seed=0)
    config = load_config(SFTConfig, None, [
        f"model.name_or_path={tiny_model_dirs('qwen2_5_vl')}", "model.lora=true", "model.lora_r=4",
        "model.min_pixels=7056", "model.max_pixels=7056", f"data.train_manifest={manifest}",
        f"training.output_dir={tmp_path / 'run'}", "training.max_steps=3", "training.batch_size=2",
        "training.learning_rate=5e-2", "rollout.max_completion_length=40", "logging.tensorboard=false",
    ])  # fmt: skip
    result = sft(config, progress=False)
    assert (result.checkpoint / "model" / "adapter_config.json").is_file()
    out = export(tmp_path / "run", tmp_path / "model")
    assert not (out / "adapter_config.json").exists()
    plain = AutoModelForImageTextToText.from_pretrained(out).eval()
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dirs("qwen2_5_vl")).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        adapted = result.model(input_ids=ids).logits
        exported, original = plain(input_ids=ids).logits, base(input_ids=ids).logits
    assert torch.allclose(exported, adapted, atol=1e-4), (exported - adapted).abs().max()
    assert not torch.allclose(exported, original, atol=1e-4)  # the adapters changed something, and it was kept
