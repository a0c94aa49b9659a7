"""The build config: typed dataclasses loaded with `mmrl.config.loader.load_config` (YAML plus key=value overrides).

Source options are one flat section (`source.kind=synthetic source.num_items=200`); each option says which kinds
read it. `validate()` checks what a kind needs, so a mistake is one line before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mmrl.data.images import MAX_IMAGE_PIXELS

SourceKind = Literal["jsonl", "coco", "refcoco", "defacto", "defacto_bench", "coop", "vlm_r1", "hf", "synthetic"]
LocalizerKind = Literal["annotation", "ocr", "vlm", "saliency", "combine"]
VARIANT_NAMES = ("positive", "counterfactual", "random_masked")


@dataclass
class SourceConfig:
    kind: SourceKind = "jsonl"
    # jsonl, defacto_bench, vlm_r1: the JSON(L) file; coco: the annotations JSON or the dataset folder;
    # defacto, coop, refcoco: the dataset folder; hf: the dataset (docs/data.md)
    path: str = ""
    limit: int = 0  # keep only the first N items (0: all)
    name: str = ""  # the manifest's `source` field (default: the kind)
    image_root: str = ""  # jsonl, defacto_bench, vlm_r1: the folder image paths are relative to (default: the file's)
    box_format: Literal["xyxy", "xywh"] = "xyxy"  # jsonl, defacto_bench, vlm_r1, hf: how the source stores boxes
    # coco
    images_dir: str = ""  # default: the annotation file's folder; refcoco: COCO's train2014 beside the dataset
    coco_mode: Literal["detection", "refs"] = "detection"
    question_template: str = ""  # default per kind; coco: {category}, refs: {expression}, coop: {choices}
    # refcoco: which refs(<split_by>).p (default: the only one, else refcoco/refcoco+ unc, refcocog umd)
    split_by: Literal["", "unc", "umd", "google"] = ""
    # defacto
    regenerate: bool = False  # ignore the released smask/rmask images and make the variants here
    # coop (CoOp's datasets as CLS-RL uses them; data_builders/adapters/coop_layouts.py)
    split_file: str = ""  # default: the split_zhou_*.json in `path`, if any (paths relative to the image folder)
    split: Literal["train", "val", "test", "testA", "testB"] = "train"  # coop and refcoco (testA/testB: refcoco)
    num_shots: int = 4  # per class; -1: all
    classes: Literal["all", "base", "new"] = "all"  # CoOp's base-to-new split: first half of sorted labels is base
    choice_fraction: float = 0.4  # CLS-RL: int(0.4 x classes) names listed, all under choice_min, at most choice_max
    choice_min: int = 30
    choice_max: int = 100
    # hf (datasets saved with save_to_disk, or parquet files)
    hf_split: str = "train"
    image_column: str = "image"
    question_column: str = "question"
    answer_column: str = "answer"
    aliases_column: str = ""
    boxes_column: str = ""
    id_column: str = ""
    # synthetic
    num_items: int = 200
    layout: Literal["grid", "free"] = "grid"
    image_size: int = 84  # square side in pixels
    grid: int = 3  # cells per side in the grid layout (84 / 3 = 28: one merged visual token per cell)
    min_object: int = 14
    max_object: int = 22
    max_objects: int = 4
    single_object_fraction: float = 0.34
    questions: list[str] = field(default_factory=lambda: ["color", "count", "position", "existence"])

    def validate(self) -> None:
        if self.kind != "synthetic" and not self.path:
            raise ValueError(f"source.path is required for source.kind={self.kind}")
        if self.limit < 0 or self.num_items < 0:
            raise ValueError("source.limit and source.num_items must be >= 0")
        if not 0.0 < self.choice_fraction <= 1.0 or self.choice_min < 1 or self.choice_max < self.choice_min:
            raise ValueError("source.choice_fraction must be in (0, 1] and 1 <= choice_min <= choice_max")
        if self.kind == "coop" and self.split not in ("train", "val", "test"):
            raise ValueError(f"source.split={self.split} is RefCOCO's; coop splits are train, val, test")
        valid = ("color", "shape", "count", "position", "existence")
        for q in self.questions:
            if q not in valid:
                raise ValueError(f"source.questions: unknown question type {q!r} (valid: {', '.join(valid)})")
        if self.kind == "synthetic":
            if not self.questions:
                raise ValueError("source.questions must name at least one question type")
            if not 4 <= self.min_object <= self.max_object:
                raise ValueError("source.min_object must be >= 4 and <= source.max_object")
            if self.layout == "grid" and self.max_object > self.image_size // self.grid - 2:
                raise ValueError(f"source.max_object must fit a grid cell of {self.image_size // self.grid} px")
            if self.max_objects < 1 or (self.layout == "grid" and self.max_objects > self.grid**2):
                raise ValueError("source.max_objects must be between 1 and grid*grid")


@dataclass
class LocalizeConfig:
    kind: LocalizerKind = "annotation"
    # ocr
    min_text_score: float = 0.5
    match_threshold: float = 0.8  # difflib ratio of normalised texts
    match_question: bool = True  # no region matches the answer -> regions matching question words are evidence
    # vlm
    model: str = ""  # a Hugging Face folder
    device: str = "cpu"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: int = 4
    max_new_tokens: int = 64
    vlm_prompt: str = (
        "Question: {question}\nName the image regions needed to answer it, as <box>[[x1,y1,x2,y2], ...]</box>."
    )
    # saliency
    max_boxes: int = 3
    min_area_fraction: float = 0.005
    # combine: proposals from one localizer, relevance chosen by another (DeFacto's scheme)
    proposals: Literal["annotation", "ocr", "saliency"] = "ocr"
    relevance: Literal["annotation", "ocr", "vlm", "saliency"] = "vlm"
    select_overlap: float = 0.5  # a proposal is relevant when this fraction of it lies in relevant boxes

    def validate(self) -> None:
        if (self.kind == "vlm" or (self.kind == "combine" and self.relevance == "vlm")) and not self.model:
            raise ValueError("localize.model (a Hugging Face folder) is required by the vlm localizer")
        if self.batch_size < 1 or self.max_boxes < 1:
            raise ValueError("localize.batch_size and localize.max_boxes must be >= 1")
        if self.kind == "combine" and self.proposals == self.relevance:
            raise ValueError("localize.proposals and localize.relevance must differ")


@dataclass
class VariantsConfig:
    make: list[str] = field(default_factory=lambda: list(VARIANT_NAMES))
    abstain_answer: str = "unknown"
    # blur and inpaint keep some of a small object's colour and shape: use them for large or textured evidence
    fill: Literal["solid", "mean", "blur", "noise", "inpaint"] = "solid"
    fill_color: list[int] = field(default_factory=lambda: [127, 127, 127])
    blur_sigma: float = 12.0
    inpaint_radius: int = 5
    margin: float = 4.0  # pixels kept between a random mask and any evidence box
    area_tolerance: float = 0.1  # random masks' total area within this fraction of the evidence's

    def validate(self) -> None:
        for name in self.make:
            if name not in VARIANT_NAMES:
                raise ValueError(f"variants.make: unknown variant {name!r} (valid: {', '.join(VARIANT_NAMES)})")
        if "positive" not in self.make:
            raise ValueError("variants.make must include 'positive'")
        if len(self.fill_color) != 3 or not all(0 <= c <= 255 for c in self.fill_color):
            raise ValueError("variants.fill_color must be three integers in 0..255")
        if not self.abstain_answer.strip():
            raise ValueError("variants.abstain_answer must not be empty")


@dataclass
class BuildConfig:
    source: SourceConfig = field(default_factory=SourceConfig)
    localize: LocalizeConfig = field(default_factory=LocalizeConfig)
    variants: VariantsConfig = field(default_factory=VariantsConfig)
    out: str = ""
    seed: int = 0
    workers: int = 2  # processes; 0 or 1 builds in this process
    shard_size: int = 32  # items per shard: the unit of parallel work and of resuming
    image_format: Literal["png", "jpeg"] = "png"  # png keeps masks exact; jpeg is faster and lossy
    jpeg_quality: int = 95
    copy_positive: bool = True  # store an RGB JPEG/PNG source's own bytes as the positive image (no re-encode)
    max_pixels: int = MAX_IMAGE_PIXELS  # larger images are rejected (decompression bombs); train and eval agree
    overwrite: bool = False  # start over in a folder that holds a build with another config
    progress: bool = True

    def validate(self) -> None:
        if self.workers < 0 or self.shard_size < 1 or self.max_pixels < 1:
            raise ValueError("workers must be >= 0, shard_size and max_pixels >= 1")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be in 1..100")
