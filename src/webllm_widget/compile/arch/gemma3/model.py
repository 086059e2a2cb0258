"""Gemma 3 (text) in ``tvm.relax.frontend.nn``.

Differences from the Llama decoder, each from the Gemma 3 report and its ``config.json``:

- the embedding is multiplied by ``sqrt(hidden_size)`` (the tied LM head uses the unscaled table);
- every RMSNorm multiplies by ``1 + w`` (weights are stored as offsets from one);
- a layer is ``x + post_attn_norm(attn(input_norm(x)))`` then ``x + post_ffn_norm(mlp(pre_ffn_norm(x)))``;
- the MLP is GeGLU with the tanh GeLU: ``down(gelu_tanh(gate) * up)``;
- q and k heads are RMS-normalized (``1 + w``) before RoPE; scores are scaled by ``query_pre_attn_scalar ** -0.5``;
- RoPE has two bases: sliding-window layers ``rope_local_base_freq``, global layers ``rope_theta`` (with
  ``rope_scaling``). The paged KV cache has one base, so the model rotates q and k itself (``rotate_half``) and the
  cache runs ``RopeMode.NONE``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache

from ..layers import Embedding, rotate_half
from ..llama.model import LlamaAttention, LlamaForCausalLM, kv_cache_dims
from .config import Gemma3Config

__all__ = ["Gemma3ForCausalLM", "kv_cache_dims", "kv_cache_rope"]


class GemmaRMSNorm(nn.Module):
    """``x / rms(x) * (1 + w)``."""

    def __init__(self, size: int, eps: float):
        self.eps = eps
        self.weight = nn.Parameter((size,))

    def forward(self, x: Tensor) -> Tensor:
        return op.rms_norm(x, op.add(self.weight, Tensor.from_scalar(1.0, self.weight.dtype)), axes=[-1],
                           epsilon=self.eps)


class Gemma3MLP(nn.Module):
    def __init__(self, cfg: Gemma3Config):
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = op.split(self.gate_up_proj(x), 2, axis=-1)
        return self.down_proj(op.gelu(gate, approximate="tanh") * up)


def _inv_freq(head_dim: int, base: float, scaling: dict) -> np.ndarray:
    inv = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    kind = scaling.get("rope_type")
    if kind == "linear":
        return inv / scaling["factor"]
    if kind:
        raise ValueError(f"Gemma 3's global layers implement linear RoPE scaling only, not {kind!r}")
    return inv


class Gemma3Attention(LlamaAttention):
    def __init__(self, cfg: Gemma3Config, layer: int):
        super().__init__(cfg)
        self.q_norm = GemmaRMSNorm(cfg.head_dim, cfg.rms_norm_eps)
        self.k_norm = GemmaRMSNorm(cfg.head_dim, cfg.rms_norm_eps)
        self.scale = cfg.query_pre_attn_scalar ** -0.5
        if cfg.is_sliding(layer):
            self.inv_freq = _inv_freq(cfg.head_dim, cfg.rope_local_base_freq, {})
        else:
            self.inv_freq = _inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)

    def forward(self, x: Tensor, kv_cache: PagedKVCache, layer_id: int) -> Tensor:
        d, hq, hkv = self.head_dim, self.num_q_heads, self.num_kv_heads
        b, s, _ = x.shape
        q, k, v = op.split(op.reshape(self.qkv_proj(x), (b, s, hq + 2 * hkv, d)), [hq, hq + hkv], axis=2)
        qkv = op.concat([self.q_norm(q), self.k_norm(k), v], dim=2)
        qkv = rotate_half(qkv, kv_cache.get_query_positions(b * s), self.inv_freq, 1.0, hq + hkv)
        out = kv_cache.attention_with_fused_qkv(layer_id, qkv, hq, sm_scale=self.scale)
        return self.o_proj(op.reshape(out, (b, s, hq * d)))


class Gemma3DecoderLayer(nn.Module):
    def __init__(self, cfg: Gemma3Config, layer: int):
        eps = cfg.rms_norm_eps
        self.self_attn = Gemma3Attention(cfg, layer)
        self.mlp = Gemma3MLP(cfg)
        self.input_layernorm = GemmaRMSNorm(cfg.hidden_size, eps)
        self.post_attention_layernorm = GemmaRMSNorm(cfg.hidden_size, eps)
        self.pre_feedforward_layernorm = GemmaRMSNorm(cfg.hidden_size, eps)
        self.post_feedforward_layernorm = GemmaRMSNorm(cfg.hidden_size, eps)

    def forward(self, x: Tensor, kv_cache: PagedKVCache, layer_id: int) -> Tensor:
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), kv_cache, layer_id))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class Gemma3Model(nn.Module):
    def __init__(self, cfg: Gemma3Config):
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([Gemma3DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers)])
        self.norm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.normalizer = math.sqrt(cfg.hidden_size)

    def forward(self, x: Tensor, kv_cache: PagedKVCache) -> Tensor:
        x = x * Tensor.from_scalar(self.normalizer, x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, kv_cache, i)
        return self.norm(x)


class Gemma3ForCausalLM(LlamaForCausalLM):
    decoder = Gemma3Model


def kv_cache_rope(cfg: Gemma3Config) -> dict[str, Any]:
    return {"rope_scale": 1, "rope_scaling": {}, "rope_ext_factors": None, "rope_mode": "none"}
