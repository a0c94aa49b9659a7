"""The warm start's stage 0: per-cell labels from the synthetic objects, and a vision tower whose tokens learn to
point at their cell's shape and colour directions."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from data_builders.config import SourceConfig
from data_builders.synthetic import generate
from mmrl.models.vision_pretrain import EMPTY, cell_labels, label_names, pretrain_vision
from mmrl.types import Sample


def synthetic_samples(count: int, seed: int = 0) -> tuple[list[Sample], list[Image.Image]]:
    samples, images = [], []
    for index in range(count):
        item = generate(SourceConfig(kind="synthetic", questions=["color"]), seed, index)
        record = {
            "id": item.id,
            "variant": "positive",
            "image": "x.png",
            "image_size": [84, 84],
            "question": item.question,
            "answer": item.answer,
            "evidence": item.evidence,
            "meta": item.meta,
        }
        samples.append(Sample.from_record(record))
        images.append(Image.fromarray(item.pixels))
    return samples, images


def test_cell_labels_put_each_object_in_its_cell_and_empty_elsewhere():
    objects = [{"shape": "star", "color": "red", "box": [31, 3, 50, 22]},
               {"shape": "circle", "color": "blue", "box": [60, 60, 80, 81]}]  # fmt: skip
    record = {
        "id": "a",
        "variant": "positive",
        "image": "x.png",
        "image_size": [84, 84],
        "question": "q",
        "answer": "red",
        "meta": {"objects": objects},
    }
    sample = Sample.from_record(record)
    names = label_names([sample])
    assert names == (["circle", "star", EMPTY], ["blue", "red", EMPTY])
    shapes, colors = cell_labels([sample], 3, 84, names)
    assert shapes.tolist() == [[2, 1, 2, 2, 2, 2, 2, 2, 0]]  # star: top middle (cell 1); circle: bottom right (8)
    assert colors.tolist() == [[2, 1, 2, 2, 2, 2, 2, 2, 0]]


def test_pretraining_teaches_the_tower_shapes_it_could_not_tell_apart(tiny_model_dirs):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.manual_seed(0)
    path = tiny_model_dirs["qwen2_5_vl"]
    processor = AutoProcessor.from_pretrained(path, min_pixels=84 * 84, max_pixels=84 * 84)
    samples, images = synthetic_samples(600)
    untrained = pretrain_vision(AutoModelForImageTextToText.from_pretrained(path), processor, samples, images, 0)
    model = AutoModelForImageTextToText.from_pretrained(path)
    before = {k: v.clone() for k, v in model.model.language_model.state_dict().items()}
    trained = pretrain_vision(model, processor, samples, images, 600)
    # held-out cells (200 scenes not trained on), each read as its nearest target direction, 6 shapes (chance 0.17)
    # and 8 colours: untrained, it reads neither
    assert untrained["shape_accuracy"] < 0.35 and untrained["color_accuracy"] < 0.35
    assert trained["shape_accuracy"] > 0.4 and trained["color_accuracy"] > 0.95  # measured 0.47 and 1.00
    assert 40 < trained["token_norm"] < 50  # the regression's target norm, 45 (untrained: 0.6)
    after = model.model.language_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the language model is not touched


def test_pretraining_refuses_images_that_are_not_one_token_a_cell(tiny_model_dirs):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = tiny_model_dirs["qwen2_5_vl"]
    processor = AutoProcessor.from_pretrained(path, min_pixels=112 * 112, max_pixels=112 * 112)
    samples, images = synthetic_samples(4)
    images = [image.resize((112, 112)) for image in images]
    with pytest.raises(ValueError, match="9 merged tokens"):
        pretrain_vision(AutoModelForImageTextToText.from_pretrained(path), processor, samples, images, 1)
