"""Verifiable rewards: plain functions `(completion, sample) -> float | None`, one name -> function table.

Imports go one way: `parsing` and `matchers` at the bottom, the reward functions on them, `registry` (the name ->
function table) above those, and `compose` (weighted totals) at the top. Nothing here opens an image, touches the
network or imports torch.
"""
