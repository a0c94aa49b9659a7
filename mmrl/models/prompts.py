"""Prompts and SFT targets for a `Sample`, in the model's chat format.

- `build_messages(sample, data_config)`: the chat turns: an optional system prompt, then one user turn holding the
  question (with its options listed when the sample has `choices`), the template's instruction and the image, the
  question first when `data_config.question_first` (DESIGN.md: small models learn binding only that way).
- `prompt_inputs(processor, samples, images, data_config)`: those turns through the processor's chat template and
  the image processor: a left-padded batch dict with `input_ids`, `attention_mask`, `pixel_values`,
  `image_grid_thw` and `mm_token_type_ids` (transformers 5.x Qwen-VL processors return it).
- `target_completion(sample, template, frame)`: what an SFT step teaches: for "think",
  `<think>The evidence is in <box>[[x1,y1,x2,y2]]</box>.</think><answer>ANSWER</answer>` with the boxes in the
  model's frame (`FrameSpec`), written by `mmrl.rewards.parsing.format_boxes`; for "direct", the answer alone.

No import of torch or PIL at module level: `mmrl.models.tiny` reads the instruction strings for its tokenizer corpus.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmrl.boxes import FrameSpec
from mmrl.data.images import MAX_IMAGE_PIXELS, open_rgb
from mmrl.rewards.parsing import format_boxes
from mmrl.types import Box, Sample, Variant

ABSTAIN_HINT = 'If the image does not show the answer, answer "unknown".'
THINK_INSTRUCTION = (
    "First think in <think></think> tags and name the evidence regions as <box>[[x1,y1,x2,y2]]</box>, "
    "then give the final answer in <answer></answer> tags. " + ABSTAIN_HINT
)
DIRECT_INSTRUCTION = "Answer with a single word or number. " + ABSTAIN_HINT
CHOICES_INTRO = "Options:"
CHOICES_INSTRUCTION = "Answer with one of the options."
INSTRUCTIONS = {"think": THINK_INSTRUCTION, "direct": DIRECT_INSTRUCTION}
# CLS-RL's published classification prompts (src/open_r1/grpo.py and grpo_direct.py): "{question}\n" then these,
# word for word; no abstention hint, as CLS-RL has none
CLASSIFICATION_INSTRUCTIONS = {
    "think": " Please output the thinking process in <think> </think> and final answer in <answer> </answer> tags.",
    "direct": " Please directly output the answer.",
}


def question_text(sample: Sample, template: str) -> str:
    """The user's text: question, options (when the sample has choices), then the template's instruction;
    classification samples get CLS-RL's text: the question, a new line, its instruction."""
    if template not in INSTRUCTIONS:
        raise ValueError(f"unknown template {template!r} (valid: {', '.join(INSTRUCTIONS)})")
    parts = [sample.question.strip()]
    if sample.choices and not sample.meta.get("choices_in_question"):  # CLS-RL's questions list them already
        parts.append(f"{CHOICES_INTRO} {', '.join(sample.choices)}. {CHOICES_INSTRUCTION}")
    if sample.task == "classification":
        return " ".join(parts) + "\n" + CLASSIFICATION_INSTRUCTIONS[template]
    parts.append(INSTRUCTIONS[template])
    return " ".join(parts)


def build_messages(sample: Sample, data_config: Any) -> list[dict[str, Any]]:
    """Chat turns for `sample`; the image is a placeholder item, its pixels go to the processor separately."""
    text = {"type": "text", "text": question_text(sample, data_config.template)}
    image = {"type": "image"}
    content = [text, image] if data_config.question_first else [image, text]
    messages: list[dict[str, Any]] = []
    if data_config.system_prompt:
        messages.append({"role": "system", "content": [{"type": "text", "text": data_config.system_prompt}]})
    messages.append({"role": "user", "content": content})
    return messages


def render_prompt(processor: Any, sample: Sample, data_config: Any) -> str:
    """The prompt text after the chat template, ending with the assistant turn's opening."""
    return processor.apply_chat_template(
        build_messages(sample, data_config), add_generation_prompt=True, tokenize=False
    )


def load_image(sample: Sample, manifest_dir: str | Path, data_config: Any = None) -> Any:
    """The sample's image as RGB; a missing or unreadable image is an error naming the sample (never a substitute).

    `data_config`'s `max_image_pixels` and `oversize_images` cap its size (`mmrl.data.images`); a ValueError
    when over."""
    path = sample.image_path(manifest_dir)
    cap = getattr(data_config, "max_image_pixels", MAX_IMAGE_PIXELS)
    try:
        return open_rgb(path, cap, getattr(data_config, "oversize_images", "reject"))
    except OSError as err:
        raise FileNotFoundError(f"sample {sample.id}: cannot read image {path}: {err}") from None
    except ValueError as err:
        raise ValueError(f"sample {sample.id}: {err}") from None


def prompt_inputs(
    processor: Any,
    samples: Sequence[Sample],
    images: Sequence[Any],
    data_config: Any,
    max_prompt_length: int | None = None,
) -> dict[str, Any]:
    """A left-padded batch of prompts (one per sample, with its image) as the model takes it.

    Keys: input_ids (B, P), attention_mask (B, P), mm_token_type_ids (B, P), pixel_values (patches, D),
    image_grid_thw (B, 3). A prompt longer than `max_prompt_length` is an error: cutting it would cut image tokens.
    """
    if len(samples) != len(images):
        raise ValueError(f"{len(samples)} samples but {len(images)} images")
    texts = [render_prompt(processor, sample, data_config) for sample in samples]
    batch = processor(text=texts, images=list(images), padding=True, padding_side="left", return_tensors="pt")
    inputs = dict(batch)
    if max_prompt_length is not None:
        lengths = inputs["attention_mask"].sum(-1).tolist()
        long = [f"{s.id} ({n} tokens)" for s, n in zip(samples, lengths, strict=True) if n > max_prompt_length]
        if long:
            raise ValueError(f"prompts longer than max_prompt_length={max_prompt_length}: {', '.join(long)}")
    return inputs


def _frame_boxes(boxes: Sequence[Box], sample: Sample, frame: FrameSpec) -> list[Box]:
    return [frame.to_model(box, sample.image_size) for box in boxes]


def target_completion(sample: Sample, template: str, frame: FrameSpec) -> str:
    """The completion an SFT step teaches for `sample`.

    think: the evidence boxes (for a counterfactual, the masked boxes where the evidence was) in the model's frame,
    then the answer; a sample without boxes says the evidence is the whole image. direct: the answer alone.
    """
    answer = f"<answer>{sample.answer}</answer>"
    if template == "direct":
        return sample.answer
    if template != "think":
        raise ValueError(f"unknown template {template!r} (valid: {', '.join(INSTRUCTIONS)})")
    if sample.variant is Variant.COUNTERFACTUAL:
        boxes = sample.masked or sample.evidence
        where = f"The evidence is hidden in {format_boxes(_frame_boxes(boxes, sample, frame))}." if boxes else ""
        think = where or "The evidence is hidden."
    elif sample.evidence:
        think = f"The evidence is in {format_boxes(_frame_boxes(sample.evidence, sample, frame))}."
    else:
        think = "The evidence is the whole image."
    return f"<think>{think}</think>{answer}"


def tokenize_completions(processor: Any, texts: Sequence[str], max_length: int | None = None) -> tuple[Any, Any]:
    """Target texts as completion rows, each ending with `<|im_end|>` as a generated turn does.

    Returns (completion_ids (B, T) right-padded with `<|endoftext|>`, completion_mask (B, T)), the shapes
    `mmrl.models.logprobs.completion_logprobs` takes; so the SFT loss uses the same log-prob path as GRPO.
    """
    import torch

    tokenizer = processor.tokenizer
    stop, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    rows = [tokenizer(text, add_special_tokens=False)["input_ids"] + [stop] for text in texts]
    if max_length is not None:
        rows = [row[:max_length] for row in rows]
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask
