"""Phi-3 / Phi-3.5-mini: the Llama decoder from fused q/k/v and gate/up checkpoints, with LongRoPE (see ``config.py``)."""
