"""Shared pieces of the recipe tests: tiny models, tiny data in each recipe's format, and the CPU-scale overrides.

A recipe names a real checkpoint (`model.tiny_family: null`); one override swaps in a tiny model that already exists:
`model.name_or_path=<folder built by mmrl tiny-model>`. The rest of CPU_SCALE only shrinks the run.
"""

import json
from pathlib import Path

import pytest

from mmrl import testing
from mmrl.config.loader import load_config

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "configs" / "recipes"
RECIPE_FAMILY = {
    "defacto_qwen2_5_vl_7b": "qwen2_5_vl",
    "clsrl_qwen2_vl_2b": "qwen2_vl",
    "clsrl_nothink_qwen2_vl_2b": "qwen2_vl",
    "grounding_qwen2_5_vl_3b": "qwen2_5_vl",
}
RECIPE_DATA = {
    "defacto_qwen2_5_vl_7b": "synthetic",
    "clsrl_qwen2_vl_2b": "coop",
    "clsrl_nothink_qwen2_vl_2b": "coop",
    "grounding_qwen2_5_vl_3b": "refs",
}
# a smoke run's size: two steps of 2 samples x G=4 completions of at most 8 tokens, nothing written but checkpoints
CPU_SCALE = {
    "rollout.max_completion_length": 8,
    "training.batch_size": 2,
    "training.micro_batch_size": 8,
    "training.max_steps": 2,
    "training.save_steps": 0,
    "training.resume": "never",
    "logging.tensorboard": False,
    "logging.samples_steps": 0,
}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on shared cores the spinning threads cost 3x the CPU time;
    the subprocesses get OMP_NUM_THREADS=1 (test_scripts._env)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_args(path: Path) -> list[str]:
    """The overrides of an @FILE as scripts/train.sh reads it: one a line, '#' starts a comment."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


tiny_model = testing.small_tiny_model  # a session fixture: family -> folder of a small tiny model


def _build(config: str | None, overrides: list[str]) -> None:
    from data_builders.build import build
    from data_builders.config import BuildConfig

    build(load_config(BuildConfig, config, [*overrides, "workers=0", "progress=false"]))


def _coop_folder(root: Path) -> Path:
    """A CoOp-style folder per class: 4 classes x 3 images of 84x84 (two-colour patterns)."""
    from PIL import Image, ImageDraw

    colours = {"golden_retriever": "gold", "tabby_cat": "gray", "red_fox": "orangered", "sea_turtle": "seagreen"}
    for k, (name, colour) in enumerate(colours.items()):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(3):
            image = Image.new("RGB", (84, 84), colour)
            ImageDraw.Draw(image).rectangle([10 * i, 10 * k, 10 * i + 30, 10 * k + 30], fill="white")
            image.save(folder / f"img_{i}.png")
    return root


def _refs_dataset(root: Path) -> Path:
    """A RefCOCO-style annotation file: 2 images of 84x84 with 2 boxes each, one expression per box."""
    from PIL import Image, ImageDraw

    root.mkdir(parents=True)
    images, annotations, refs = [], [], []
    for image_id in (1, 2):
        image = Image.new("RGB", (84, 84), "white")
        draw = ImageDraw.Draw(image)
        for k, (box, colour) in enumerate((([4, 4, 36, 36], "red"), ([44, 40, 80, 80], "blue"))):
            draw.rectangle(box, fill=colour)
            ann_id = image_id * 10 + k
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": k + 1,
                                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})  # fmt: skip
            refs.append({"ref_id": ann_id, "ann_id": ann_id, "sentences": [{"sent": f"the {colour} square"}]})
        image.save(root / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 84, "height": 84})
    categories = [{"id": 1, "name": "square"}, {"id": 2, "name": "box"}]
    path = root / "refs.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories,
                                "refs": refs}))  # fmt: skip
    return path


@pytest.fixture(scope="session")
def recipe_manifest(tmp_path_factory):
    """kind ("synthetic", "coop", "refs") -> a small manifest built with the build config the recipe's header names."""
    root = tmp_path_factory.mktemp("recipe_data")
    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind in cache:
            return cache[kind]
        out = root / kind
        if kind == "synthetic":  # DeFacto's three variants with evidence boxes, from the synthetic generator
            _build(None, ["source.kind=synthetic", "source.num_items=4", f"out={out}"])
        elif kind == "coop":
            folder = _coop_folder(root / "coop_src")
            _build(str(REPO / "configs/build/coop_fewshot.yaml"), [f"source.path={folder}", f"out={out}"])
        else:
            refs = _refs_dataset(root / "refs_src")
            _build(str(REPO / "configs/build/vqa_jsonl.yaml"), [
                "source.kind=coco", "source.coco_mode=refs", f"source.path={refs}", "variants.make=[positive]",
                f"out={out}"])  # fmt: skip
        cache[kind] = out / "manifest.jsonl"
        return cache[kind]

    return get


@pytest.fixture
def tiny_overrides(tiny_model, recipe_manifest, tmp_path):
    """recipe name -> the overrides that run it on the CPU: the tiny-model swap, the tiny data, CPU_SCALE."""

    def make(recipe: str, out: str = "run") -> list[str]:
        values = {
            "model.name_or_path": tiny_model(RECIPE_FAMILY[recipe]),
            "data.train_manifest": recipe_manifest(RECIPE_DATA[recipe]),
            "training.output_dir": tmp_path / out,
            **CPU_SCALE,
        }
        return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in values.items()]

    return make
