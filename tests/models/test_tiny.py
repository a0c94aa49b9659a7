"""The tiny offline models: build time, the tokenizer, the chat template, the saved folder and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from mmrl.errors import UserError
from mmrl.models.tiny import SPECIAL_TOKENS, build_tiny_model, main
from mmrl.testing import FAMILIES

THINK = "<think>The evidence is in <box>[[12,34,56,78]]</box>.</think><answer>red</answer>"


def test_build_is_fast_and_small(tmp_path, tiny_model_dirs):
    # tiny_model_dirs has already imported transformers and torch: this times the build alone
    for family in FAMILIES:
        start = time.perf_counter()
        build_tiny_model(family, tmp_path / family)
        elapsed = time.perf_counter() - start
        assert elapsed < 2.0, f"{family} took {elapsed:.2f}s"  # ~0.1-0.3 s alone; slack for shared cores
        config = json.loads((tmp_path / family / "config.json").read_text())
        assert config["model_type"] == family
        size = (tmp_path / family / "model.safetensors").stat().st_size / 4  # fp32 parameters
        assert 0.5e6 < size < 3e6


def test_small_options_build(tmp_path):
    # the trainer tests use hidden 64, one layer, vision depth 1
    from transformers import AutoModelForImageTextToText

    for family in FAMILIES:
        path = build_tiny_model(family, tmp_path / family, hidden_size=64, num_layers=1, vision_depth=1, vocab_size=600)
        model = AutoModelForImageTextToText.from_pretrained(path)
        assert model.config.text_config.num_hidden_layers == 1
        assert model.config.text_config.vocab_size <= 600


def test_tokenizer_covers_any_text(loaded, family):
    _, processor = loaded[family]
    tokenizer = processor.tokenizer
    texts = [THINK, "What color is the circle? unknown", "".join(chr(c) for c in range(32, 127)), "naïve café 数字"]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    # the synthetic data's words are whole tokens or a few pieces, not bytes
    assert len(tokenizer("What color is the circle?")["input_ids"]) <= 8
    for token in SPECIAL_TOKENS:
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_chat_template_matches_qwen(loaded, family):
    _, processor = loaded[family]
    conversation = [
        {"role": "user", "content": [{"type": "text", "text": "Q?"}, {"type": "image"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
    ]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    system = "" if family == "qwen3_vl" else "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    expected = (
        system + "<|im_start|>user\nQ?<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n"
        "<|im_start|>assistant\nred<|im_end|>\n<|im_start|>assistant\n"
    )
    assert text == expected


def test_round_trip_keeps_weights(tiny_model_dirs, loaded, family, tmp_path):
    from transformers import AutoModelForImageTextToText

    model, _ = loaded[family]
    model.save_pretrained(tmp_path)
    again = AutoModelForImageTextToText.from_pretrained(tmp_path)
    first, second = model.state_dict(), again.state_dict()
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name


def test_folder_loads_without_mmrl_or_network(tiny_model_dirs):
    code = """
import sys
from transformers import AutoModelForImageTextToText, AutoProcessor
from PIL import Image
for path in sys.argv[1:]:
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is it?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[Image.new("RGB", (64, 48), "red")], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert inputs["input_ids"].shape[1] < out.shape[1] <= inputs["input_ids"].shape[1] + 3
assert not any(name == "mmrl" or name.startswith("mmrl.") for name in sys.modules), "mmrl was imported"
print("ok")
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH="")
    paths = [str(tiny_model_dirs[f]) for f in FAMILIES]
    # run from the model folder's parent, not the repo, so the working tree's mmrl is not importable by accident
    result = subprocess.run(
        [sys.executable, "-c", code, *paths], env=env, cwd=tiny_model_dirs[FAMILIES[0]].parent,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_cli_builds_and_rejects_bad_options(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a zebra is striped\n")
    assert main(["--family", "qwen2_5_vl", "--out", str(tmp_path / "m"), "--corpus", str(corpus), "--layers", "1"]) == 0
    assert (tmp_path / "m" / "tokenizer.json").exists()
    assert "wrote a tiny qwen2_5_vl model" in capsys.readouterr().out
    with pytest.raises(UserError, match="corpus file not found"):
        main(["--family", "qwen2_vl", "--out", str(tmp_path / "x"), "--corpus", str(tmp_path / "missing.txt")])
    with pytest.raises(UserError, match="multiple of 32"):
        main(["--family", "qwen2_vl", "--out", str(tmp_path / "x"), "--hidden-size", "100"])
    with pytest.raises(SystemExit):  # argparse: an unknown family exits 2 with its own message
        main(["--family", "llava", "--out", str(tmp_path / "x")])
