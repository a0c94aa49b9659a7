"""Reinforcement learning: the pure GRPO maths, the phases of a step, the loop, and supervised warm starts."""
