"""CoOp's classification datasets in their released layouts, with CLS-RL's questions and choices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from data_builders.adapters import iter_items
from data_builders.config import BuildConfig
from mmrl.config.loader import load_config
from mmrl.errors import UserError
from mmrl.models.prompts import question_text
from mmrl.types import Sample

from .conftest import photo, read_jsonl, run_build


def _items(*overrides: str) -> list:
    return list(iter_items(load_config(BuildConfig, None, ["source.kind=coop", *overrides])))


def _image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo(24, 24, seed=seed)).save(path)


def _pets(tmp_path: Path) -> Path:
    """oxford_pets/ as CoOp's DATASETS.md lays it out: images/, annotations/, split_zhou_OxfordPets.json."""
    root = tmp_path / "oxford_pets"
    breeds = ["abyssinian", "american_bulldog", "beagle", "great_pyrenees", "yorkshire_terrier"]
    split = {"train": [], "val": [], "test": []}
    for label, breed in enumerate(breeds):
        for i in range(3):
            name = f"{breed}_{i + 1}.jpg"  # CoOp's pets images sit flat in images/
            _image(root / "images" / name, seed=label * 10 + i)
            split["train" if i < 2 else "test"].append([name, label, breed])
    (root / "annotations").mkdir()
    (root / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    return root


def test_coop_split_file_found_in_the_dataset_folder(tmp_path: Path) -> None:
    root = _pets(tmp_path)
    items = _items(f"source.path={root}", "source.num_shots=-1")
    assert len(items) == 10 and items[0].id == "abyssinian_1" and items[0].source == "oxford_pets"
    assert {i.answer for i in items} == {"abyssinian", "american bulldog", "beagle", "great pyrenees",
                                         "yorkshire terrier"}  # fmt: skip
    item = items[2]  # american bulldog: 5 classes < 30, so CLS-RL lists all of them
    assert item.answer == "american bulldog" and sorted(item.choices) == sorted({i.answer for i in items})
    listed = ", ".join(item.choices)
    assert item.question == f"What type of object is in the photo?\n Please choose one from list [ {listed}]."
    sample = Sample.from_record({"id": "x", "variant": "positive", "image": "x.png", "image_size": [4, 4],
                                 "question": item.question, "answer": item.answer, "choices": list(item.choices),
                                 "meta": item.meta})  # fmt: skip
    assert question_text(sample, "direct").count(item.choices[0]) == 1  # the prompt does not list them twice
    test = _items(f"source.path={root}", "source.split=test", "source.num_shots=-1")
    assert [i.id for i in test] == [f"{b}_3" for b in ["abyssinian", "american_bulldog", "beagle", "great_pyrenees",
                                                       "yorkshire_terrier"]]  # fmt: skip
    two = _items(f"source.path={root}", "source.num_shots=1")
    assert len(two) == 5 and [i.id for i in two] == [i.id for i in _items(f"source.path={root}", "source.num_shots=1")]
    base = {i.answer for i in _items(f"source.path={root}", "source.classes=base")}
    new = {i.answer for i in _items(f"source.path={root}", "source.classes=new")}
    assert base == {"abyssinian", "american bulldog", "beagle"} and new == {"great pyrenees", "yorkshire terrier"}
    for item in _items(f"source.path={root}", "source.classes=new"):
        assert set(item.choices) == new
    # the recipes' form: the image folder as path, the split file named
    named = _items(f"source.path={root / 'images'}", f"source.split_file={root / 'split_zhou_OxfordPets.json'}")
    assert [i.id for i in named] == [i.id for i in _items(f"source.path={root}")]
    summary = run_build(tmp_path / "out", "source.kind=coop", f"source.path={root}", "variants.make=[positive]")
    records = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    assert summary["variants"] == {"positive": 10} and records[0]["task"] == "classification"
    assert records[0]["choices"] and records[0]["image_size"] == [24, 24]


def test_coop_dataset_prefixes_and_caltech_rules(tmp_path: Path) -> None:
    eurosat = tmp_path / "eurosat"
    split = {
        "train": [
            [f"{c}/{c}_1.jpg", i, n]
            for i, (c, n) in enumerate([("AnnualCrop", "Annual Crop Land"), ("Forest", "Forest"), ("River", "River")])
        ],
        "val": [],
        "test": [],
    }
    for path, _, _ in split["train"]:
        _image(eurosat / "2750" / path)
    (eurosat / "split_zhou_EuroSAT.json").write_text(json.dumps(split))
    items = _items(f"source.path={eurosat}")
    assert items[0].answer == "Annual Crop Land" and items[0].id == "AnnualCrop/AnnualCrop_1"
    assert items[0].question.startswith("What type of object is in the centered satellite photo?\n")
    caltech = tmp_path / "caltech-101" / "101_ObjectCategories"
    for folder in ("BACKGROUND_Google", "Faces", "Faces_easy", "airplanes", "sea_horse"):
        for i in range(2):
            _image(caltech / folder / f"image_{i + 1:04d}.jpg", seed=i)
    items = _items(f"source.path={caltech}", "source.num_shots=-1")
    assert sorted({i.answer for i in items}) == ["airplane", "face", "sea horse"] and len(items) == 6
    assert len({i.id for i in items}) == 6  # image_0001.jpg in every folder: ids keep the folder


def test_coop_fgvc_aircraft_and_imagenet_layouts(tmp_path: Path) -> None:
    fgvc = tmp_path / "fgvc_aircraft"
    (fgvc / "images").mkdir(parents=True)
    variants = ["707-320", "A300B4", "F/A-18"]
    (fgvc / "variants.txt").write_text("\n".join(variants) + "\n")
    rows = {"train": [("1025794", "707-320"), ("1340192", "F/A-18"), ("0056978", "A300B4")], "val": [], "test": []}
    for split, pairs in rows.items():
        (fgvc / f"images_variant_{split}.txt").write_text("".join(f"{i} {n}\n" for i, n in pairs))
        for image_id, _ in pairs:
            _image(fgvc / "images" / f"{image_id}.jpg")
    items = _items(f"source.path={fgvc}")
    assert [(i.id, i.answer, i.meta["label"]) for i in items] == [
        ("1025794", "707-320", 0), ("0056978", "A300B4", 1), ("1340192", "F/A-18", 2)]  # fmt: skip
    assert items[0].question.startswith("What type of aircraft is in the photo?\n")
    assert run_build(tmp_path / "out", "source.kind=coop", f"source.path={fgvc}", "variants.make=[positive]")[
        "items"] == 3  # fmt: skip

    imagenet = tmp_path / "imagenet"
    imagenet.mkdir()
    (imagenet / "classnames.txt").write_text("n01440764 tench\nn01443537 goldfish\nn01484850 great white shark\n")
    for wnid in ("n01440764", "n01443537", "n01484850"):
        _image(imagenet / "images" / "train" / wnid / f"{wnid}_1.JPEG")
        _image(imagenet / "images" / "val" / wnid / f"ILSVRC2012_val_{wnid}.JPEG")
    items = _items(f"source.path={imagenet}")
    assert [i.answer for i in items] == ["tench", "goldfish", "great white shark"]  # names, not wnids
    assert items[0].id == "n01440764/n01440764_1"
    assert [i.id.split("/")[1] for i in _items(f"source.path={imagenet}", "source.split=test")][0].startswith("ILSVRC")
    (imagenet / "classnames.txt").write_text("n01440764 tench\n")
    with pytest.raises(UserError, match="no name for class folder n01443537"):
        _items(f"source.path={imagenet}")


def test_coop_choice_count_follows_clsrl(tmp_path: Path) -> None:
    root = tmp_path / "food-101"
    split = {"train": [], "val": [], "test": []}
    for label in range(101):
        path = f"class_{label:03d}/1.jpg"
        _image(root / "images" / path, seed=label)
        split["train"].append([path, label, f"class_{label:03d}"])
    (root / "split_zhou_Food101.json").write_text(json.dumps(split))
    items = _items(f"source.path={root}")
    assert len(items) == 101 and {len(i.choices) for i in items} == {40}  # int(0.4 x 101)
    assert all(i.answer in i.choices for i in items) and items[0].answer == "class 000"
    base = _items(f"source.path={root}", "source.classes=base")
    assert len(base) == 51 and {len(i.choices) for i in base} == {51}  # int(0.4 x 51) = 20 < 30: all listed


# dataset -> (split file under data/<folder>/ or None, image folder, four image paths relative to it)
_RELEASES = {
    "oxford_pets": ("split_zhou_OxfordPets.json", "images", ["abyssinian_1.jpg", "beagle_1.jpg", "pug_1.jpg",
                                                               "saint_bernard_1.jpg"]),
    "eurosat": ("split_zhou_EuroSAT.json", "2750", ["Forest/Forest_1.jpg", "River/River_1.jpg",
                                                    "SeaLake/SeaLake_1.jpg", "Highway/Highway_1.jpg"]),
    "caltech-101": ("split_zhou_Caltech101.json", "101_ObjectCategories", ["accordion/image_0001.jpg",
                    "airplanes/image_0001.jpg", "anchor/image_0001.jpg", "ant/image_0001.jpg"]),
    "dtd": ("split_zhou_DescribableTextures.json", "images", ["banded/banded_0002.jpg", "blotchy/blotchy_0003.jpg",
                                                              "braided/braided_0050.jpg", "bubbly/bubbly_0038.jpg"]),
    "food-101": ("split_zhou_Food101.json", "images", ["apple_pie/1005649.jpg", "baklava/1006121.jpg",
                                                       "beignets/1009131.jpg", "bibimbap/1014775.jpg"]),
    "oxford_flowers": ("split_zhou_OxfordFlowers.json", "jpg", ["image_04467.jpg", "image_07129.jpg",
                                                                "image_05166.jpg", "image_03014.jpg"]),
    "stanford_cars": ("split_zhou_StanfordCars.json", "", ["cars_train/00001.jpg", "cars_train/00002.jpg",
                                                           "cars_train/00003.jpg", "cars_train/00004.jpg"]),
    "sun397": ("split_zhou_SUN397.json", "SUN397", ["a/abbey/sun_a.jpg", "a/airport_terminal/sun_b.jpg",
                                                    "b/bakery/shop/sun_c.jpg", "c/campus/sun_d.jpg"]),
    "ucf101": ("split_zhou_UCF101.json", "UCF-101-midframes", ["Apply_Eye_Makeup/v_1.jpg", "Archery/v_2.jpg",
                                                               "Basketball/v_3.jpg", "Biking/v_4.jpg"]),
}  # fmt: skip


def _release(data: Path, folder: str) -> None:
    split_name, image_dir, paths = _RELEASES[folder]
    train = []
    for label, path in enumerate(paths):
        _image(data / folder / image_dir / path, seed=label)
        name = path.split("/")[-2] if "/" in path and folder != "stanford_cars" else f"class_{label}"
        train.append([path, label, name.lower()])
    (data / folder / split_name).write_text(json.dumps({"train": train, "val": [], "test": []}))


def test_recipe_build_args_read_the_released_layouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from data_builders.build import main

    repo = Path(__file__).parents[2]
    data = tmp_path / "data"
    for folder in _RELEASES:
        _release(data, folder)
    fgvc = data / "fgvc_aircraft"
    (fgvc / "variants.txt").parent.mkdir(parents=True)
    (fgvc / "variants.txt").write_text("707-320\n727-200\nA300B4\nF/A-18\n")
    (fgvc / "images_variant_train.txt").write_text("0001 707-320\n0002 727-200\n0003 A300B4\n0004 F/A-18\n")
    for i in range(1, 5):
        _image(fgvc / "images" / f"000{i}.jpg", seed=i)
    imagenet = data / "imagenet"
    imagenet.mkdir()
    (imagenet / "classnames.txt").write_text("n01 tench\nn02 goldfish\nn03 great white shark\nn04 tiger shark\n")
    for i in range(1, 5):
        _image(imagenet / "images" / "train" / f"n0{i}" / f"n0{i}_1.JPEG", seed=i)
    monkeypatch.chdir(tmp_path)
    for args_file in sorted((repo / "configs" / "recipes" / "coop").glob("*.build.args")):
        lines = [ln.strip() for ln in args_file.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        assert main([str(repo / "configs" / "build" / "coop_fewshot.yaml"), *lines, "workers=0", "progress=false"]) == 0
        out = next(ln.split("=", 1)[1] for ln in lines if ln.startswith("out="))
        records = read_jsonl(tmp_path / out / "manifest.jsonl")
        assert len(records) == 2, args_file.name  # 4 classes: base is the first 2, one image each
        assert all(r["answer"] in r["choices"] and "_" not in r["answer"] for r in records), args_file.name
