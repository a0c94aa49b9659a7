"""A resume with a changed config: exactness-breaking changes refused with the diff, harmless ones noted, every
segment's config kept."""

import pytest
import yaml

from mmrl.config.loader import to_dict
from mmrl.config.schema import TrainConfig
from mmrl.errors import UserError
from mmrl.io.resume_guard import config_changes
from mmrl.rl.loop import train


def test_config_changes_fills_keys_the_saved_config_lacks_with_defaults():
    saved = to_dict(TrainConfig())
    del saved["training"]["vision_lr_scale"]  # a key added to mmrl after the run started, at its default
    current = to_dict(TrainConfig())
    current["training"]["seed"] = 3
    current["rewards"]["terms"] = {"answer": 1.0}  # two terms dropped from the default {answer, format, grounding}
    changes = config_changes(saved, current, to_dict(TrainConfig()))
    assert changes == {
        "training.seed": (0, 3),
        "rewards.terms.format": (0.5, None),
        "rewards.terms.grounding": (0.5, None),
    }
    # a mapping value is compared as saved, not merged with the default's entries
    saved["rewards"]["terms"] = {"answer": 1.0}
    assert config_changes(saved, current, to_dict(TrainConfig())) == {"training.seed": (0, 3)}


def test_resume_refuses_breaking_changes_notes_harmless_ones_and_keeps_each_config(make_config, capsys):
    common = {"training.max_steps": 1, "training.resume": "auto"}
    first = train(make_config(**common))
    run_dir = first.run_dir
    saved = (run_dir / "config.yaml").read_text()

    for key, value in (("training.seed", 7), ("training.batch_size", 4), ("training.learning_rate", 0.5)):
        with pytest.raises(UserError) as info:
            train(make_config(**common, **{key: value}))
        message = str(info.value)
        assert "\n" not in message and f"{key} " in message and f"resume_allow_changes=[{key}]" in message
        assert (run_dir / "config.yaml").read_text() == saved  # the refused config overwrote nothing

    capsys.readouterr()
    resumed = train(make_config(**{**common, "training.max_steps": 2, "logging.samples_steps": 5}))
    assert resumed.step == 2
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmrl: note")]
    assert notes == [
        "mmrl: note: resuming at step 1 with changed logging.samples_steps 0 -> 5, training.max_steps 1 -> 2"
    ]
    assert (run_dir / "config_history" / "config-before-step-000001.yaml").read_text() == saved
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["training"]["max_steps"] == 2

    allowed = {"training.max_steps": 3, "training.learning_rate": 5e-4, "training.resume_allow_changes": "[training]"}
    assert train(make_config(**{**common, **allowed})).step == 3
    assert sorted(p.name for p in (run_dir / "config_history").iterdir()) == [
        "config-before-step-000001.yaml",
        "config-before-step-000002.yaml",
    ]
