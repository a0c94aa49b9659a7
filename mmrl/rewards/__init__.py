"""Verifiable rewards: plain functions `(completion, sample) -> float | None`, one name -> function table.

`REWARDS` maps a term name to its function; `score_completions` weighs the terms a `RewardConfig` lists and
`summarize_terms` turns the result into loggable means and standard deviations. Nothing here opens an image,
touches the network or imports torch.
"""

from mmrl.rewards.abstention import is_abstention
from mmrl.rewards.compose import RewardScores, score_completions, summarize_terms
from mmrl.rewards.config import RewardConfig
from mmrl.rewards.registry import REWARDS

__all__ = ["REWARDS", "RewardConfig", "RewardScores", "is_abstention", "score_completions", "summarize_terms"]
