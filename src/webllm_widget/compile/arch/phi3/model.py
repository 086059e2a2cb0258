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
from tvm import te, tirx
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache

from ..llama import model as llama
from ..llama.model import LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM, LlamaModel, kv_cache_dims
from .config import Phi3Config, longrope_attention_factor

__all__ = ["Phi3ForCausalLM", "kv_cache_dims", "kv_cache_rope", "rotate_half"]


def rotate_half(qkv: Tensor, positions: Tensor, inv_freq: np.ndarray, gain: float, rotated_heads: int) -> Tensor:
    """Rotate-half RoPE on the first ``rotated_heads`` heads of ``qkv`` [b, s, heads, d]: dims i and i + d/2 turn
    by ``position * inv_freq[i]``, and both cos and sin are multiplied by ``gain``. ``positions``: [b * s] int32."""
    freqs = Tensor.from_const(np.asarray(inv_freq, dtype="float32"))

    def compute(x: te.Tensor, pos: te.Tensor, f: te.Tensor):
        b, s, h, d = x.shape
        half = d // 2

        def body(i, j, k, c):
            angle = pos[i * s + j].astype("float32") * f[c % half]
            other = tirx.if_then_else(c < half, -x[i, j, k, c + half], x[i, j, k, c - half])
            turned = (tirx.cos(angle) * x[i, j, k, c] + tirx.sin(angle) * other) * tirx.const(gain, "float32")
            return tirx.if_then_else(k < rotated_heads, turned.astype(x.dtype), x[i, j, k, c])

        return te.compute(x.shape, body, name="rope_by_model")

    return op.tensor_expr_op(compute, "rope_by_model", [qkv, positions, freqs])


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
