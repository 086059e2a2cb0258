"""The Llama-family decoder (Llama, SmolLM2, TinyLlama, Qwen2) in ``tvm.relax.frontend.nn``.

Parameter names follow MLC's layout so that web-llm model folders line up: q/k/v are
stacked into ``self_attn.qkv_proj`` and gate/up into ``mlp.gate_up_proj``. Attention runs
over TVM's ``TIRPagedKVCache`` (RoPE with the rotate-half convention, i.e. Hugging Face's
row layout; llama.cpp's permuted q/k rows are undone by the weight reader).

Example::

    from webllm_widget.compile.llama import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig.from_dict({"hidden_size": 64, "intermediate_size": 128,
                                 "num_attention_heads": 4, "num_key_value_heads": 2,
                                 "num_hidden_layers": 2, "vocab_size": 256})
    model = LlamaForCausalLM(cfg)
"""
from __future__ import annotations

import dataclasses
from typing import Any

from tvm import te
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache

from ..errors import BadModel

_ARCHITECTURES = ("llama", "qwen2", "mistral")


@dataclasses.dataclass
class LlamaConfig:
    """Shape and numerics of a Llama-family model, read from an HF-style ``config.json`` dict."""

    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_hidden_layers: int
    vocab_size: int
    num_key_value_heads: int = 0
    head_dim: int = 0
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    context_window_size: int = 2048
    prefill_chunk_size: int = 128
    model_type: str = "llama"

    def __post_init__(self) -> None:
        if not self.num_key_value_heads:
            self.num_key_value_heads = self.num_attention_heads
        if not self.head_dim:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise BadModel(
                f"num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads}); this is not a Llama-family model.")
        self.prefill_chunk_size = max(1, min(self.prefill_chunk_size, self.context_window_size))

    @classmethod
    def from_dict(cls, cfg: dict[str, Any], **overrides: Any) -> "LlamaConfig":
        """Build from an HF-style config dict (unknown keys are ignored).

        ``context_window_size`` falls back to ``max_position_embeddings``; ``attention_bias``
        defaults to True for Qwen2, whose q/k/v projections carry biases.
        """
        arch = str(cfg.get("architecture") or cfg.get("model_type") or "llama").lower()
        if arch not in _ARCHITECTURES:
            raise BadModel(f"architecture {arch!r} is not a Llama-family model; supported: {', '.join(_ARCHITECTURES)}.",
                           detail={"architecture": arch})
        missing = [k for k in ("hidden_size", "intermediate_size", "num_attention_heads",
                               "num_hidden_layers", "vocab_size") if k not in cfg]
        if missing:
            raise BadModel(f"the model config lacks {', '.join(missing)}; pass a complete config.json.")
        kw: dict[str, Any] = {f.name: cfg[f.name] for f in dataclasses.fields(cls) if f.name in cfg}
        kw["model_type"] = arch
        if "context_window_size" not in cfg and "max_position_embeddings" in cfg:
            kw["context_window_size"] = cfg["max_position_embeddings"]
        if "attention_bias" not in cfg:
            kw["attention_bias"] = arch == "qwen2"
        kw.update(overrides)
        kw["head_dim"] = kw.get("head_dim") or 0
        kw["num_key_value_heads"] = kw.get("num_key_value_heads") or 0
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _last_token(x: Tensor) -> Tensor:
    """[b, s, h] -> [b, 1, h]: prefill only needs the logits of the last position."""
    def compute(t: te.Tensor):
        b, s, h = t.shape
        return te.compute((b, 1, h), lambda i, _, k: t[i, s - 1, k], name="index_last_token")

    return op.tensor_expr_op(compute, "index_last_token", [x])


class LlamaEmbedding(nn.Module):
    """Token embedding; when the LM head is tied it also computes logits from the same table."""

    def __init__(self, vocab_size: int, hidden_size: int):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.weight = nn.Parameter((vocab_size, hidden_size))

    def forward(self, ids: Tensor) -> Tensor:
        return op.take(self.weight, ids, axis=0)

    def lm_head_forward(self, x: Tensor) -> Tensor:
        return op.matmul(x, op.permute_dims(self.weight), out_dtype="float32")


class LlamaMLP(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        self.intermediate_size = cfg.intermediate_size
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate_up = self.gate_up_proj(x)
        gate, up = op.split(gate_up, 2, axis=-1)
        return self.down_proj(op.silu(gate) * up)


class LlamaAttention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        self.head_dim = cfg.head_dim
        self.num_q_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.qkv_proj = nn.Linear(cfg.hidden_size, (self.num_q_heads + 2 * self.num_kv_heads) * self.head_dim,
                                  bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.num_q_heads * self.head_dim, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor, kv_cache: PagedKVCache, layer_id: int) -> Tensor:
        d, hq, hkv = self.head_dim, self.num_q_heads, self.num_kv_heads
        b, s, _ = x.shape
        qkv = op.reshape(self.qkv_proj(x), (b, s, hq + 2 * hkv, d))
        out = kv_cache.attention_with_fused_qkv(layer_id, qkv, hq, sm_scale=d ** -0.5)
        return self.o_proj(op.reshape(out, (b, s, hq * d)))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        self.self_attn = LlamaAttention(cfg)
        self.mlp = LlamaMLP(cfg)
        self.input_layernorm = nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False)
        self.post_attention_layernorm = nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False)

    def forward(self, x: Tensor, kv_cache: PagedKVCache, layer_id: int) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), kv_cache, layer_id)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        self.embed_tokens = LlamaEmbedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([LlamaDecoderLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False)

    def forward(self, x: Tensor, kv_cache: PagedKVCache) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, kv_cache, i)
        return self.norm(x)


class LlamaForCausalLM(nn.Module):
    """The whole model; ``get_default_spec()`` lists the functions web-llm calls (embed, prefill, decode)."""

    def __init__(self, cfg: LlamaConfig):
        self.config = cfg
        self.model = LlamaModel(cfg)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.dtype = "float32"

    def to(self, dtype: str | None = None) -> None:
        super().to(dtype=dtype)
        if dtype is not None:
            self.dtype = dtype

    def _logits(self, h: Tensor) -> Tensor:
        if self.config.tie_word_embeddings:
            logits = self.model.embed_tokens.lm_head_forward(h)
        else:
            logits = self.lm_head(h)
        return logits if logits.dtype == "float32" else logits.astype("float32")

    def embed(self, input_ids: Tensor) -> Tensor:
        return self.model.embed_tokens(input_ids)

    def prefill(self, input_embed: Tensor, kv_cache: PagedKVCache):
        h = self.model(input_embed, kv_cache)
        return self._logits(_last_token(h)), kv_cache

    def decode(self, input_embed: Tensor, kv_cache: PagedKVCache):
        h = self.model(input_embed, kv_cache)
        return self._logits(h), kv_cache

    def get_default_spec(self) -> nn.spec.ModuleSpec:
        hs, dt = self.config.hidden_size, self.dtype
        packed = {"param_mode": "packed", "effect_mode": "none"}
        spec = {
            "embed": {"input_ids": nn.spec.Tensor(["seq_len"], "int32"), "$": packed},
            "prefill": {"input_embed": nn.spec.Tensor([1, "seq_len", hs], dt),
                        "kv_cache": nn.spec.Object(object_type=PagedKVCache), "$": packed},
            "decode": {"input_embed": nn.spec.Tensor([1, 1, hs], dt),
                       "kv_cache": nn.spec.Object(object_type=PagedKVCache), "$": packed},
        }
        return nn.spec.ModuleSpec.from_raw(spec, self)


def kv_cache_dims(cfg: LlamaConfig) -> dict[str, int]:
    """The KV cache block that ``_metadata`` declares (web-llm and MLC read these keys)."""
    return {"num_hidden_layers": cfg.num_hidden_layers, "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": cfg.num_key_value_heads, "head_dim": cfg.head_dim}


