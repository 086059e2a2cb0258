"""The Llama family: Llama 2/3.x, SmolLM2, TinyLlama, Mistral-shaped checkpoints and Qwen2/Qwen2.5."""
