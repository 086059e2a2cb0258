"""Qwen3 in ``tvm.relax.frontend.nn``: the Llama decoder whose query and key heads are each RMS-normalized
(a learned weight per head dimension, shared by all heads) after the projection and before RoPE.

Qwen3 has no q/k/v bias and its ``head_dim`` need not be ``hidden_size / heads``; both are the Llama
config's already. Parameter names: ``model.layers.{i}.self_attn.q_norm.weight`` / ``k_norm.weight`` besides
the Llama ones.

Example::

    from webllm_widget.compile.arch.qwen3.config import Qwen3Config
    from webllm_widget.compile.arch.qwen3.model import Qwen3ForCausalLM
    model = Qwen3ForCausalLM(Qwen3Config.from_dict({...}))
"""
from __future__ import annotations

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from ..llama.model import (LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM, LlamaModel, kv_cache_dims,
                           kv_cache_rope)
from .config import Qwen3Config

__all__ = ["Qwen3ForCausalLM", "kv_cache_dims", "kv_cache_rope"]


class Qwen3Attention(LlamaAttention):
    def __init__(self, cfg: Qwen3Config):
        super().__init__(cfg)
        self.q_norm = nn.RMSNorm(cfg.head_dim, -1, cfg.rms_norm_eps, bias=False)
        self.k_norm = nn.RMSNorm(cfg.head_dim, -1, cfg.rms_norm_eps, bias=False)

    def heads(self, qkv: Tensor) -> Tensor:
        hq, hkv = self.num_q_heads, self.num_kv_heads
        q, k, v = op.split(qkv, [hq, hq + hkv], axis=2)
        return op.concat([self.q_norm(q), self.k_norm(k), v], dim=2)


class Qwen3DecoderLayer(LlamaDecoderLayer):
    attention = Qwen3Attention


class Qwen3Model(LlamaModel):
    layer = Qwen3DecoderLayer


class Qwen3ForCausalLM(LlamaForCausalLM):
    decoder = Qwen3Model
