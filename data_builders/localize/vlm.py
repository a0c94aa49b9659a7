"""Evidence named by a vision-language model: any Hugging Face folder that AutoModelForImageTextToText and
AutoProcessor load (a Qwen2.5-VL-7B on a GPU node, a tiny random model in the tests).

Items go in batches (`localize.batch_size`), greedy decoding, question before the image (DESIGN.md). The reply is
parsed by `mmrl.rewards.parsing.parse_boxes` (the one parsing module), converted from the model's frame to pixels
(`mmrl.boxes.FrameSpec`), clipped, and checked; a reply with no usable box rejects the item with the reply quoted,
and a failing generation rejects its batch. Nothing here raises for a bad reply.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from data_builders.config import LocalizeConfig
from data_builders.localize.base import Localized, Result, Target
from data_builders.records import ItemError
from mmrl.boxes import FAMILY_FRAME, FrameSpec, clip_box
from mmrl.rewards.parsing import parse_boxes

MAX_AREA_FRACTION = 0.9  # a "box" over nearly the whole image names no region: masking it says nothing


def interpret_reply(reply: str, size: tuple[int, int], spec: FrameSpec) -> Result:
    """The evidence a reply names, or the reason it names none.

    >>> interpret_reply("<box>[[10, 10, 30, 40]]</box>", (100, 100), FrameSpec()).evidence
    [Box(x1=10.0, y1=10.0, x2=30.0, y2=40.0)]
    >>> interpret_reply("no idea", (100, 100), FrameSpec()).code
    'vlm_unparseable'
    """
    quoted = reply.strip().replace("\n", " ")[:80]
    boxes = parse_boxes(reply)
    if not boxes:
        return ItemError("vlm_unparseable", f"vlm: the reply names no well-formed box: {quoted!r}")
    kept = []
    for box in boxes:
        pixel = clip_box(spec.to_pixels(box, size), size)
        if pixel is not None and pixel.area < MAX_AREA_FRACTION * size[0] * size[1]:
            kept.append(pixel)
    if not kept:
        return ItemError("vlm_invalid_boxes", f"vlm: the reply's boxes are outside the image or cover it: {quoted!r}")
    return Localized(kept, [], {"localizer": "vlm", "vlm_reply": reply.strip()[:500]})


class VlmLocalizer:
    def __init__(self, cfg: LocalizeConfig) -> None:
        self.cfg = cfg
        self.model: Any = None
        self.processor: Any = None
        self.spec = FrameSpec()

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        dtype = "auto" if self.cfg.dtype == "auto" else getattr(torch, self.cfg.dtype)
        self.processor = AutoProcessor.from_pretrained(self.cfg.model)
        self.processor.tokenizer.padding_side = "left"  # batched generation continues every row from its end
        self.model = AutoModelForImageTextToText.from_pretrained(self.cfg.model, dtype=dtype).to(self.cfg.device)
        self.model.eval()
        family = getattr(self.model.config, "model_type", "")
        if family in FAMILY_FRAME:
            ip = self.processor.image_processor
            size = getattr(ip, "size", None) or {}
            min_pixels = getattr(ip, "min_pixels", None) or size.get("shortest_edge", 56 * 56)
            max_pixels = getattr(ip, "max_pixels", None) or size.get("longest_edge", 14 * 14 * 4 * 1280)
            self.spec = FrameSpec.for_family(family, int(min_pixels), int(max_pixels))

    def localize(self, targets: list[Target]) -> list[Result]:
        if self.model is None:
            self._load()
        results: list[Result] = []
        for start in range(0, len(targets), self.cfg.batch_size):
            results += self._batch(targets[start : start + self.cfg.batch_size])
        return results

    def _batch(self, targets: list[Target]) -> list[Result]:
        import torch

        texts = []
        for t in targets:
            prompt = self.cfg.vlm_prompt.format(question=t.item.question)
            messages = [{"role": "user", "content": [{"type": "text", "text": prompt}, {"type": "image"}]}]
            texts.append(self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        images = [Image.fromarray(t.pixels) for t in targets]
        try:
            inputs = self.processor(text=texts, images=images, return_tensors="pt", padding=True).to(self.cfg.device)
            pad_id = self.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
            with torch.inference_mode():
                output = self.model.generate(
                    **inputs,
                    max_new_tokens=self.cfg.max_new_tokens,
                    do_sample=False,
                    bad_words_ids=[[pad_id]] if isinstance(pad_id, int) and pad_id >= 0 else None,
                )
            replies = self.processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        except Exception as err:  # noqa: BLE001 - one failing batch must not stop the build
            reason = f"vlm: generation failed ({type(err).__name__}: {str(err)[:120]})"
            return [ItemError("vlm_error", reason) for _ in targets]
        return [interpret_reply(r, t.size, self.spec) for r, t in zip(replies, targets, strict=True)]
