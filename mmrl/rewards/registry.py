"""The one name -> reward function table. A config's `rewards.terms` lists names from here with weights.

Every function is `fn(completion, sample, *, config=RewardConfig(), frame=FrameSpec()) -> float | None`.
"""

from __future__ import annotations

from collections.abc import Callable

from mmrl.rewards.answer import accuracy_reward, answer_reward
from mmrl.rewards.format import box_format_reward, direct_format_reward, format_reward, think_format_reward
from mmrl.rewards.grounding import grounding_reward
from mmrl.rewards.penalties import length_penalty, repetition_penalty

RewardFn = Callable[..., float | None]

REWARDS: dict[str, RewardFn] = {
    "answer": answer_reward,
    "accuracy": accuracy_reward,
    "format": format_reward,
    "think_format": think_format_reward,
    "box_format": box_format_reward,
    "direct_format": direct_format_reward,
    "grounding": grounding_reward,
    "length": length_penalty,
    "repetition": repetition_penalty,
}
