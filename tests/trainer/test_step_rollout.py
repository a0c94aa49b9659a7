"""Phase 1 generates once per step: the groups of a step do not depend on how its prompts are batched."""

import pytest
import torch

from mmrl.rl.groups import collect_groups
from mmrl.rl.run import setup


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_one_generation_per_step_equals_one_per_sample(make_config, family):
    # 4 samples: all in one generation (default), one sample per call (the old rollout's shape), and the plain
    # repeated path per sample: the same tokens, masks and texts, log-probs to 1e-5 (prompts of different lengths,
    # left-padded together: tests/models/test_rollout.py)
    config = make_config(family, **{"training.batch_size": 4, "rollout.temperature": 0.9, "rollout.top_k": 50})
    run = setup(config)
    start = run.stream.state_dict()
    outcomes, calls = {}, []
    handle = run.unwrapped_model.register_forward_pre_hook(lambda *args: calls.append(1))
    for name, changes in {"batched": {}, "one per call": {"generation_batch_size": 1},
                          "plain": {"share_prompt": False}}.items():  # fmt: skip
        run.stream.load_state_dict(start)
        for key, value in changes.items():
            setattr(run.config.rollout, key, value)
        calls.clear()
        run.timers = {}
        outcomes[name] = collect_groups(run)[0]
        run.config.rollout.generation_batch_size, run.config.rollout.share_prompt = 0, True
        if name == "batched":  # one prefill + one forward per decoded token, for all 4 samples together
            width = max(g.completion_ids.shape[1] for g in outcomes[name])
            assert len(calls) == width
    handle.remove()
    batched = outcomes["batched"]
    assert len(batched) == 4 and len({g.sample.id for g in batched}) == 4
    for name in ("one per call", "plain"):
        for a, b in zip(batched, outcomes[name], strict=True):
            assert a.sample.id == b.sample.id and a.texts == b.texts
            assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.completion_mask, b.completion_mask)
            torch.testing.assert_close(a.rewards, b.rewards)
            torch.testing.assert_close(a.sampling_logps, b.sampling_logps, atol=1e-5, rtol=0)
