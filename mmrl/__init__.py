"""mmrl: reinforcement-learning fine-tuning of vision-language models with verifiable rewards.

Importing the package does no work: heavy modules (torch, transformers) load only where used.
"""

__version__ = "0.1.0"
