"""Models: loading (LoRA, freezing, pixel budget), tiny models, prompts and model inputs, the one log-prob function."""
