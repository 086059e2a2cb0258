"""Qwen3: the Llama decoder with an RMSNorm on every query and key head (see ``model.py``)."""
