"""Prompts for a Sample through the real processors, and the SFT target completions in each model frame."""

from __future__ import annotations

import pytest
import torch

from mmrl.boxes import FrameSpec
from mmrl.config.schema import DataConfig
from mmrl.models.logprobs import completion_logprobs
from mmrl.models.prompts import (
    DIRECT_INSTRUCTION,
    THINK_INSTRUCTION,
    build_messages,
    load_image,
    prompt_inputs,
    question_text,
    render_prompt,
    target_completion,
    tokenize_completions,
)
from mmrl.testing import shapes_image
from mmrl.types import Sample


def sample(**changes) -> Sample:
    record = {
        "id": "s1-positive",
        "group_id": "s1",
        "variant": "positive",
        "image": "images/s1.png",
        "image_size": [84, 84],
        "question": "What color is the circle?",
        "answer": "red",
        "evidence": [[28.0, 0.0, 56.0, 28.0]],
        "masked": [],
    }
    return Sample.from_record({**record, **changes})


def test_question_first_and_image_first():
    first = build_messages(sample(), DataConfig(question_first=True))
    assert [item["type"] for item in first[-1]["content"]] == ["text", "image"]
    second = build_messages(sample(), DataConfig(question_first=False, system_prompt="Be brief."))
    assert second[0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    assert [item["type"] for item in second[-1]["content"]] == ["image", "text"]


def test_templates_and_choices(loaded):
    _, processor = loaded["qwen2_5_vl"]
    think = render_prompt(processor, sample(), DataConfig(template="think"))
    assert THINK_INSTRUCTION in think and think.endswith("<|im_start|>assistant\n")
    assert think.index("What color") < think.index("<|vision_start|>")
    direct = render_prompt(processor, sample(choices=["red", "blue", "green"]), DataConfig(template="direct"))
    assert "Options: red, blue, green." in direct and "<think>" not in direct


def test_prompt_inputs_batch(loaded, family, tmp_path):
    _, processor = loaded[family]
    (tmp_path / "images").mkdir()
    shapes_image(84, 84, [("circle", "red", (28, 0, 56, 28))]).save(tmp_path / "images" / "s1.png")
    shapes_image(168, 84, [("square", "blue", (0, 0, 20, 20))]).save(tmp_path / "images" / "s2.png")
    samples = [sample(), sample(id="s2", image="images/s2.png", image_size=[168, 84], question="How many?")]
    images = [load_image(s, tmp_path) for s in samples]
    inputs = prompt_inputs(processor, samples, images, DataConfig())
    assert set(inputs) == {"input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw"}
    assert inputs["image_grid_thw"].shape == (2, 3) and (inputs["attention_mask"][:, -1] == 1).all()
    with pytest.raises(ValueError, match="max_prompt_length=10"):
        prompt_inputs(processor, samples, images, DataConfig(), max_prompt_length=10)
    with pytest.raises(FileNotFoundError, match="s3"):
        load_image(sample(id="s3", image="images/missing.png"), tmp_path)


def test_target_completion_in_each_frame():
    # an 84x84 image: Qwen2-VL/Qwen3-VL speak 0-1000, Qwen2.5-VL pixels of the resized image (84x84 stays 84x84)
    item = sample()
    norm = target_completion(item, "think", FrameSpec.for_family("qwen2_vl"))
    assert norm == "<think>The evidence is in <box>[[333,0,667,333]]</box>.</think><answer>red</answer>"
    pixels = target_completion(item, "think", FrameSpec.for_family("qwen2_5_vl", max_pixels=28 * 28 * 256))
    assert pixels == "<think>The evidence is in <box>[[28,0,56,28]]</box>.</think><answer>red</answer>"
    assert target_completion(item, "direct", FrameSpec.for_family("qwen3_vl")) == "red"
    masked = sample(variant="counterfactual", answer="unknown", masked=[[28.0, 0.0, 56.0, 28.0]])
    assert target_completion(masked, "think", FrameSpec.for_family("qwen2_5_vl")).endswith("<answer>unknown</answer>")
    whole = target_completion(sample(evidence=[]), "think", FrameSpec.for_family("qwen2_vl"))
    assert whole == "<think>The evidence is the whole image.</think><answer>red</answer>"


def test_tokenized_targets_score_through_logprobs(loaded, tmp_path):
    model, processor = loaded["qwen3_vl"]
    ids, mask = tokenize_completions(processor, ["red", "<think>x</think><answer>blue</answer>"])
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert ids[0, mask[0].sum() - 1] == im_end and mask[1].sum() > mask[0].sum()
    image = shapes_image(84, 84, [("circle", "red", (28, 0, 56, 28))])
    inputs = prompt_inputs(processor, [sample(), sample(id="s2")], [image, image], DataConfig())
    with torch.no_grad():
        logps = completion_logprobs(model, inputs, ids, mask)
    assert (logps[mask == 1] < 0).all() and (logps[mask == 0] == 0).all()


def test_classification_gets_cls_rls_published_prompt():
    # a CoOp item as data_builders.adapters.coop writes it: CLS-RL's question with the list of class names
    question = "What type of object is in the photo?\n Please choose one from list [ Abyssinian, pug, beagle]."
    item = sample(question=question, answer="pug", task="classification", choices=["Abyssinian", "pug", "beagle"],
                  evidence=[], meta={"choices_in_question": True})  # fmt: skip
    # CLS-RL's QUESTION_TEMPLATE, grpo.py: "{Question}\n Please output the thinking process in <think> </think> and
    # final answer in <answer> </answer> tags."; grpo_direct.py: "{Question}\n Please directly output the answer."
    assert question_text(item, "think") == (
        question + "\n Please output the thinking process in <think> </think> and final answer in <answer> </answer>"
        " tags."
    )
    assert question_text(item, "direct") == question + "\n Please directly output the answer."
    # a classification record whose question does not list the classes gets them as options, then CLS-RL's line
    plain = sample(question="What is this?", task="classification", choices=["cat", "dog"])
    assert question_text(plain, "direct") == (
        "What is this? Options: cat, dog. Answer with one of the options.\n Please directly output the answer."
    )
    # other tasks keep mmrl's instructions
    assert question_text(sample(), "direct") == f"What color is the circle? {DIRECT_INSTRUCTION}"
    assert question_text(sample(), "think") == f"What color is the circle? {THINK_INSTRUCTION}"


def test_tiny_tokenizer_reads_cls_rl_text(loaded):
    _, processor = loaded["qwen2_vl"]
    text = " Please directly output the answer."
    assert processor.tokenizer.decode(processor.tokenizer(text)["input_ids"]) == text
