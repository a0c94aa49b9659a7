"""`mmrl infer MODEL_DIR --image PATH --question TEXT [--out PNG]`: one greedy answer, with the named boxes.

The prompt is the training prompt (template, question-first layout, system prompt from the folder's
`mmrl_config.yaml`, or `--config`). Boxes the model names are read by `mmrl.rewards.parsing` and converted from the
model's
frame to pixels of the given image by `mmrl.boxes.FrameSpec` with the processor's pixel budget (the one saved at
export), so they land where the model looked. `--out` saves the image with the boxes drawn.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mmrl.data.images import MAX_IMAGE_PIXELS, open_rgb
from mmrl.errors import UserError
from mmrl.eval.evaluate import greedy_completions, load_model_folder, read_model_config, resolve_device
from mmrl.rewards.grounding import predicted_boxes
from mmrl.rewards.parsing import extract_answer
from mmrl.types import Sample, Variant


def open_image(path: str | Path, data_config: Any = None) -> Any:
    """The image as RGB, capped like training's (`mmrl.data.images`); a missing, unreadable or oversized file is a
    UserError naming it."""

    path = Path(path)
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    cap = getattr(data_config, "max_image_pixels", MAX_IMAGE_PIXELS)
    try:
        return open_rgb(path, cap, getattr(data_config, "oversize_images", "reject"))
    except ValueError as err:
        raise UserError(str(err).splitlines()[0]) from None
    except OSError as err:
        raise UserError(f"cannot read image {path}: {str(err).splitlines()[0]}") from None


def answer_image(
    model: Any, processor: Any, frame: Any, config: Any, image: Any, question: str
) -> tuple[str, str | None, list[Any]]:
    """(completion text, parsed answer or None, named boxes in pixels of `image`) for one question."""

    sample = Sample("infer", "infer", Variant.POSITIVE, "image.png", image.size, question, "")
    text = greedy_completions(model, processor, [sample], [image], config.data, config.rollout.max_completion_length)[0]
    boxes, _ = predicted_boxes(text, sample, frame, config.rewards.max_boxes)
    return text, extract_answer(text, config.rewards.template), boxes


def draw_boxes(image: Any, boxes: list[Any], answer: str | None, out: str | Path) -> Path:
    from PIL import ImageDraw

    canvas = image.copy()
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(min(canvas.size) / 100))
    for box in boxes:
        draw.rectangle([box.x1, box.y1, box.x2 - 1, box.y2 - 1], outline=(255, 0, 0), width=width)
    if answer:
        draw.text((2, 2), answer, fill=(255, 0, 0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmrl infer", description="answer one question about one image")
    parser.add_argument("model_dir", help="a model folder (from `mmrl export`)")
    parser.add_argument("--image", required=True, help="the image file")
    parser.add_argument("--question", required=True, help="the question")
    parser.add_argument("--out", help="save the image with the named boxes drawn here (PNG)")
    parser.add_argument("--config", help="a run config for template / prompt (default: the folder's own)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--device", default="auto", help="auto (a GPU in bf16 when present), cpu, cuda or cuda:N")
    args = parser.parse_args(argv)

    if args.out and Path(args.out).resolve() == Path(args.image).resolve():
        raise UserError(f"--out {args.out} is the input image: refusing to draw over it (choose another file)")
    if args.out and Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a folder; give the PNG file to write")
    config = read_model_config(args.model_dir, args.config)
    image = open_image(args.image, config.data)  # a bad image fails before the model loads
    model, processor, _, frame = load_model_folder(args.model_dir, *resolve_device(args.device))
    text, answer, boxes = answer_image(model, processor, frame, config, image, args.question)
    if args.json:
        print(json.dumps({"answer": answer, "boxes": [b.to_list() for b in boxes], "completion": text}))
    else:
        print(f"answer: {answer if answer is not None else '(none parsed)'}")
        for box in boxes:
            print("box: [" + ", ".join(f"{v:.1f}" for v in box.to_list()) + "]")
        print(f"completion: {text}")
    if args.out:
        print(f"drawn: {draw_boxes(image, boxes, answer, args.out)}")
    return 0
