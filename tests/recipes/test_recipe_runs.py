"""Each recipe runs two GRPO steps on the CPU as shipped, with a tiny model swapped in by one override
(`model.name_or_path=<a tiny model folder>`), tiny data in the recipe's own format, and a smoke run's size."""

import json

import pytest

from mmrl.config.loader import load_config
from mmrl.config.schema import TrainConfig
from mmrl.rl.loop import train

from .conftest import RECIPE_FAMILY, RECIPES


@pytest.mark.parametrize("name", sorted(RECIPE_FAMILY))
def test_recipe_runs_two_steps(name, tiny_overrides):
    overrides = tiny_overrides(name)
    config = load_config(TrainConfig, RECIPES / f"{name}.yaml", overrides)
    shipped = load_config(TrainConfig, RECIPES / f"{name}.yaml")
    # what the recipe trains with is what the tiny run trains with, bar the overridden size
    assert (config.rewards, config.grpo, config.data.template) == (shipped.rewards, shipped.grpo, shipped.data.template)
    run = train(config)
    assert run.step == 2 and run.family == RECIPE_FAMILY[name]
    rows = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert row["groups_used"] == 2 and row["lr"] == 1e-6
        for term in shipped.rewards.terms:
            assert f"reward/{term}" in row
    assert (run.run_dir / "checkpoint-000002" / "model" / "config.json").is_file()
