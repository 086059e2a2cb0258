"""Gemma 2 in ``tvm.relax.frontend.nn``.

Differences from the Llama decoder, each from the Gemma 2 report and its ``config.json``:

- the embedding is multiplied by ``sqrt(hidden_size)`` (the tied LM head uses the unscaled table);
- every RMSNorm multiplies by ``1 + w``;
- a layer is ``x + post_attn_norm(attn(input_norm(x)))`` then ``x + post_ffn_norm(mlp(pre_ffn_norm(x)))``;
- the MLP is GeGLU with the tanh GeLU;
- scores are scaled by ``query_pre_attn_scalar ** -0.5`` and soft-capped, ``attn_logit_softcapping *
  tanh(score / attn_logit_softcapping)``, before the mask and softmax: the KV cache's attention kernels are
  rewritten to do it (:mod:`..attention`, applied by the exporter from the config);
- the even layers attend within ``sliding_window`` (the KV cache's windowed layers), the odd ones to everything;
- the logits are soft-capped the same way with ``final_logit_softcapping``.

RoPE has one base, so the paged KV cache applies it.
"""
from __future__ import annotations

import math

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache

from ..gemma3.model import Gemma3MLP, GemmaRMSNorm
from ..layers import Embedding
from ..llama.model import LlamaAttention, LlamaForCausalLM, kv_cache_dims, kv_cache_rope
from .config import Gemma2Config

__all__ = ["Gemma2ForCausalLM", "kv_cache_dims", "kv_cache_rope"]


class Gemma2Attention(LlamaAttention):
    def __init__(self, cfg: Gemma2Config):
        super().__init__(cfg)
        self.scale = cfg.query_pre_attn_scalar ** -0.5

    def forward(self, x: Tensor, kv_cache: PagedKVCache, layer_id: int) -> Tensor:
        d, hq, hkv = self.head_dim, self.num_q_heads, self.num_kv_heads
        b, s, _ = x.shape
        qkv = op.reshape(self.qkv_proj(x), (b, s, hq + 2 * hkv, d))
        out = kv_cache.attention_with_fused_qkv(layer_id, qkv, hq, sm_scale=self.scale)
        return self.o_proj(op.reshape(out, (b, s, hq * d)))


class Gemma2DecoderLayer(nn.Module):
    def __init__(self, cfg: Gemma2Config):
        eps = cfg.rms_norm_eps
        self.self_attn = Gemma2Attention(cfg)
        self.mlp = Gemma3MLP(cfg)
        self.input_layernorm = GemmaRMSNorm(cfg.hidden_size, eps)
        self.post_attention_layernorm = GemmaRMSNorm(cfg.hidden_size, eps)
        self.pre_feedforward_layernorm = GemmaRMSNorm(cfg.hidden_size, eps)
        self.post_feedforward_layernorm = GemmaRMSNorm(cfg.hidden_size, eps)

    def forward(self, x: Tensor, kv_cache: PagedKVCache, layer_id: int) -> Tensor:
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), kv_cache, layer_id))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class Gemma2Model(nn.Module):
    def __init__(self, cfg: Gemma2Config):
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([Gemma2DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.normalizer = math.sqrt(cfg.hidden_size)

    def forward(self, x: Tensor, kv_cache: PagedKVCache) -> Tensor:
        x = x * Tensor.from_scalar(self.normalizer, x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, kv_cache, i)
        return self.norm(x)


class Gemma2ForCausalLM(LlamaForCausalLM):
    decoder = Gemma2Model

    def _logits(self, h: Tensor) -> Tensor:
        logits = super()._logits(h)
        cap = self.config.final_logit_softcapping
        if not cap:
            return logits
        c = Tensor.from_scalar(cap, "float32")
        return op.tanh(logits / c) * c
