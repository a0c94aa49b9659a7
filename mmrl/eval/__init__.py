"""Evaluation: `mmrl eval` (per-variant scores), detection AP, `mmrl infer`."""
