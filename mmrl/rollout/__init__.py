"""Generation backends: Hugging Face sampling with shared prompts, and a vLLM server."""
