"""Phi-3 in ``tvm.relax.frontend.nn``: the Llama decoder (the checkpoint's fused q/k/v and gate/up are the model's
own layout), with LongRoPE applied by the model itself.

LongRoPE (see ``config.py``) is RoPE with each frequency divided by its short factor and cos/sin multiplied by
the attention factor. TVM 0.27's KV cache has a ``longrope`` mode, but its kernel does not build (its rotation
helper tests a buffer for truth), so the model rotates q and k before the cache (:meth:`Phi3Attention.rotate`, at
the positions the cache reports) and the cache is made with ``RopeMode.NONE``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from tvm.relax.frontend.nn import Tensor
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache

from ..layers import rotate_half
from ..llama import model as llama
from ..llama.model import LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM, LlamaModel, kv_cache_dims
from .config import Phi3Config, longrope_attention_factor

__all__ = ["Phi3ForCausalLM", "kv_cache_dims", "kv_cache_rope"]


class Phi3Attention(LlamaAttention):
    def __init__(self, cfg: Phi3Config):
        super().__init__(cfg)
        s = cfg.rope_scaling
        self.longrope = s.get("rope_type") == "longrope"
        if self.longrope:
            base = 1.0 / cfg.rope_theta ** (np.arange(0, cfg.head_dim, 2, dtype=np.float64) / cfg.head_dim)
            self.inv_freq = base / np.asarray(s["short_factor"], dtype=np.float64)
            self.gain = longrope_attention_factor(s["max_position_embeddings"], s["original_max_position_embeddings"])

    def rotate(self, qkv: Tensor, kv_cache: PagedKVCache) -> Tensor:
        if not self.longrope:
            return qkv
        b, s = qkv.shape[0], qkv.shape[1]
        positions = kv_cache.get_query_positions(b * s)
        return rotate_half(qkv, positions, self.inv_freq, self.gain, self.num_q_heads + self.num_kv_heads)


class Phi3DecoderLayer(LlamaDecoderLayer):
    attention = Phi3Attention


class Phi3Model(LlamaModel):
    layer = Phi3DecoderLayer


class Phi3ForCausalLM(LlamaForCausalLM):
    decoder = Phi3Model


def kv_cache_rope(cfg: Phi3Config) -> dict[str, Any]:
    if cfg.rope_scaling.get("rope_type") != "longrope":
        return llama.kv_cache_rope(cfg)
    if len(cfg.rope_scaling["short_factor"]) != cfg.head_dim // 2:
        raise ValueError(f"longrope needs {cfg.head_dim // 2} short factors, got "
                         f"{len(cfg.rope_scaling['short_factor'])}")
    return {"rope_scale": 1, "rope_scaling": {}, "rope_ext_factors": None, "rope_mode": "none"}
