"""Every shipped config loads and validates with the schema it is written for; the recipes say what they
reproduce; the per-dataset override files of the 11 CoOp datasets load on top of both CLS-RL recipes.

Schemas: configs/build/ -> data_builders' BuildConfig; configs/accelerate/ -> Accelerate's YAML (parsed); a config
with a top-level `sft:` section -> mmrl.rl.sft's SFTConfig (`mmrl sft`); every other YAML -> TrainConfig (`mmrl train`).
"""

from pathlib import Path

import pytest
import yaml

from mmrl.config.loader import load_config, read_yaml
from mmrl.config.schema import TrainConfig

from .conftest import RECIPE_FAMILY, RECIPES, REPO, read_args

CONFIGS = REPO / "configs"
TRAIN_CONFIGS = sorted(
    p for p in CONFIGS.rglob("*.yaml") if p.relative_to(CONFIGS).parts[0] not in ("build", "accelerate")
)
COOP = ["imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft",
        "sun397", "dtd", "eurosat", "ucf101"]  # fmt: skip


def _id(path: Path) -> str:
    return str(path.relative_to(CONFIGS))


def test_the_recipes_are_shipped():
    assert {p.stem for p in RECIPES.glob("*.yaml")} == set(RECIPE_FAMILY)
    assert CONFIGS / "debug_tiny.yaml" in TRAIN_CONFIGS


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=_id)
def test_training_config_loads(path):
    if "sft" in read_yaml(path):
        from mmrl.rl.sft import SFTConfig

        load_config(SFTConfig, path)
    else:
        load_config(TrainConfig, path)


@pytest.mark.parametrize("path", sorted((CONFIGS / "build").glob("*.yaml")), ids=_id)
def test_build_config_loads(path):
    from data_builders.config import BuildConfig

    load_config(BuildConfig, path)


@pytest.mark.parametrize("path", sorted((CONFIGS / "accelerate").glob("*.yaml")), ids=_id)
def test_accelerate_config_parses(path):
    data = yaml.safe_load(path.read_text())
    assert data["distributed_type"] in ("MULTI_GPU", "DEEPSPEED", "FSDP") and data["num_machines"] == 1


@pytest.mark.parametrize("name", sorted(RECIPE_FAMILY))
def test_recipe_names_a_real_checkpoint_and_says_what_it_reproduces(name):
    path = RECIPES / f"{name}.yaml"
    config = load_config(TrainConfig, path)
    assert config.model.name_or_path.startswith("Qwen/") and config.model.tiny_family is None
    assert "tiny_family" in read_yaml(path)["model"]  # set on purpose, not left to the tiny default
    header = path.read_text().split("\nmodel:")[0]
    assert "Reproduces:" in header and "Memory:" in header


def test_published_settings():
    defacto = load_config(TrainConfig, RECIPES / "defacto_qwen2_5_vl_7b.yaml")
    assert defacto.model.name_or_path == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert (defacto.rollout.num_generations, defacto.training.learning_rate) == (4, 1e-6)
    assert set(defacto.rewards.terms) == {"answer", "format", "grounding"} and defacto.data.template == "think"
    assert defacto.rewards.matcher == "exact" and defacto.rewards.abstention_answer == "unknown"
    for name, template, terms in (("clsrl_qwen2_vl_2b", "think", {"accuracy", "format"}),
                                  ("clsrl_nothink_qwen2_vl_2b", "direct", {"accuracy"})):  # fmt: skip
        config = load_config(TrainConfig, RECIPES / f"{name}.yaml")
        assert config.model.name_or_path == "Qwen/Qwen2-VL-2B-Instruct"
        assert (config.rollout.num_generations, config.training.learning_rate, config.grpo.beta) == (4, 1e-6, 0.04)
        assert config.rollout.temperature == 1.0 and config.rewards.matcher == "label"
        assert (config.data.template, set(config.rewards.terms)) == (template, terms)
    grounding = load_config(TrainConfig, RECIPES / "grounding_qwen2_5_vl_3b.yaml")
    assert grounding.rewards.grounding_mode == "mean_iou" and "grounding" in grounding.rewards.terms
    text = (RECIPES / "clsrl_nothink_qwen2_vl_2b.yaml").read_text()
    assert "84.4" in text and "81.3" in text


@pytest.mark.parametrize("dataset", COOP)
def test_coop_overrides_load_on_both_recipes(dataset):
    from data_builders.config import BuildConfig

    coop = RECIPES / "coop"
    seen = {}
    for recipe, suffix in (("clsrl_qwen2_vl_2b", "args"), ("clsrl_nothink_qwen2_vl_2b", "nothink.args")):
        config = load_config(TrainConfig, RECIPES / f"{recipe}.yaml", read_args(coop / f"{dataset}.{suffix}"))
        assert config.training.output_dir == f"runs/{recipe}/{dataset}"  # never two runs in one folder
        seen[recipe] = config.data.train_manifest
    build = load_config(BuildConfig, CONFIGS / "build/coop_fewshot.yaml", read_args(coop / f"{dataset}.build.args"))
    assert (build.source.num_shots, build.source.classes, build.source.name) == (4, "base", dataset)
    assert set(seen.values()) == {f"{build.out}/manifest.jsonl"}  # both recipes train on what the build writes


def test_no_stray_override_files():
    names = {p.name for p in (RECIPES / "coop").iterdir()}
    assert names == {f"{d}.{s}" for d in COOP for s in ("args", "nothink.args", "build.args")}
