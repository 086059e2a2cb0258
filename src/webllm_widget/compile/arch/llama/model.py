"""The Llama-family decoder (Llama, SmolLM2, TinyLlama, Qwen2) in ``tvm.relax.frontend.nn``.

Parameter names follow MLC's layout so that web-llm model folders line up: q/k/v are
stacked into ``self_attn.qkv_proj`` and gate/up into ``mlp.gate_up_proj`` (``loader.py`` maps the
checkpoint's names onto them). Attention runs over TVM's ``TIRPagedKVCache`` (RoPE with the
rotate-half convention, i.e. Hugging Face's row layout; llama.cpp's permuted q/k rows are undone by
the GGUF reader).

Example::

    from webllm_widget.compile.arch.llama.config import LlamaConfig
    from webllm_widget.compile.arch.llama.model import LlamaForCausalLM
    model = LlamaForCausalLM(LlamaConfig.from_dict({...}))
"""
from __future__ import annotations

from typing import Any

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache

from ....errors import BadModel
from ..layers import Embedding, last_token
from .config import LlamaConfig


def _one_token(x: Tensor) -> bool:
    """Whether ``x`` ``[.., s, hidden]`` is one token of a static shape (decode), where products may take in a norm."""
    return isinstance(x.shape[-2], int) and x.shape[-2] == 1


def _fuses_norm(proj: nn.Module, norm: nn.Module, x: Tensor) -> bool:
    """Whether ``proj`` computes ``norm(x)`` itself (the hardware library's one-token products, see
    ``quant.nn.QuantizedLinear.forward_norm``): a plain RMSNorm, one token, a product built with ``fuse_norm``."""
    return getattr(proj, "fuse_norm", False) and type(norm) is nn.RMSNorm and _one_token(x)


class LlamaMLP(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        self.intermediate_size = cfg.intermediate_size
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor, norm: nn.Module | None = None) -> Tensor:
        """The MLP of ``x``, or of ``norm(x)`` computed inside the gate/up product when ``norm`` is given."""
        gate_up = self.gate_up_proj(x) if norm is None else self.gate_up_proj.forward_norm(x, norm)
        if getattr(self.down_proj, "fuse_glu", False) and _one_token(x):
            # one token (decode): the down projection computes silu(gate) * up as it reads its input
            return self.down_proj.forward_glu(gate_up)
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

    def heads(self, qkv: Tensor) -> Tensor:
        """The stacked q, k, v heads ``[b, s, hq + 2 hkv, d]`` as attention takes them (a family may norm them)."""
        return qkv

    def rotate(self, qkv: Tensor, kv_cache: PagedKVCache) -> Tensor:
        """RoPE applied by the model (none here: the KV cache applies it as K is stored; see :func:`kv_cache_rope`)."""
        return qkv

    def forward(self, x: Tensor, kv_cache: PagedKVCache, layer_id: int, norm: nn.Module | None = None) -> Tensor:
        """Attention over ``x``, or over ``norm(x)`` computed inside the q/k/v product when ``norm`` is given."""
        d, hq, hkv = self.head_dim, self.num_q_heads, self.num_kv_heads
        b, s, _ = x.shape
        qkv = self.qkv_proj(x) if norm is None else self.qkv_proj.forward_norm(x, norm)
        qkv = self.heads(op.reshape(qkv, (b, s, hq + 2 * hkv, d)))
        qkv = self.rotate(qkv, kv_cache)
        out = kv_cache.attention_with_fused_qkv(layer_id, qkv, hq, sm_scale=d ** -0.5)
        return self.o_proj(op.reshape(out, (b, s, hq * d)))


class LlamaDecoderLayer(nn.Module):
    #: the attention module (a family with another attention sets its own)
    attention = LlamaAttention

    def __init__(self, cfg: LlamaConfig):
        self.self_attn = self.attention(cfg)
        self.mlp = LlamaMLP(cfg)
        self.input_layernorm = nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False)
        self.post_attention_layernorm = nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False)

    def forward(self, x: Tensor, kv_cache: PagedKVCache, layer_id: int) -> Tensor:
        # one token on the hardware library: each norm is computed by the product that reads it (the residual
        # stream x stays un-normed)
        if _fuses_norm(self.self_attn.qkv_proj, self.input_layernorm, x):
            x = x + self.self_attn(x, kv_cache, layer_id, norm=self.input_layernorm)
        else:
            x = x + self.self_attn(self.input_layernorm(x), kv_cache, layer_id)
        if _fuses_norm(self.mlp.gate_up_proj, self.post_attention_layernorm, x):
            return x + self.mlp(x, norm=self.post_attention_layernorm)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    #: the decoder layer (a family with another layer sets its own)
    layer = LlamaDecoderLayer

    def __init__(self, cfg: LlamaConfig):
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([self.layer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False)

    def forward(self, x: Tensor, kv_cache: PagedKVCache) -> Tensor:
        return self.norm(self.hidden(x, kv_cache))

    def hidden(self, x: Tensor, kv_cache: PagedKVCache) -> Tensor:
        """The decoder stack's output before the final norm."""
        for i, layer in enumerate(self.layers):
            x = layer(x, kv_cache, i)
        return x


class LlamaForCausalLM(nn.Module):
    """The whole model; ``get_default_spec()`` lists the functions web-llm calls (embed, prefill, decode)."""

    #: the decoder stack (a family with other layers sets its own)
    decoder = LlamaModel

    def __init__(self, cfg: LlamaConfig):
        self.config = cfg
        self.model = self.decoder(cfg)
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

    def _head(self) -> nn.Module:
        return self.model.embed_tokens if self.config.tie_word_embeddings else self.lm_head

    def _head_fuses_norm(self) -> bool:
        """Whether the LM head computes the final RMSNorm as it reads its one token (the hardware library; a family
        with another decoder stack or its own logits keeps the separate norm)."""
        return (isinstance(self.model, LlamaModel) and type(self)._logits is LlamaForCausalLM._logits
                and getattr(self._head(), "fuse_norm", False) and type(self.model.norm) is nn.RMSNorm)

    def _normed_logits(self, h: Tensor) -> Tensor:
        """The logits of ``model.norm(h)`` for one token ``h`` (un-normed), the norm inside the LM head's product."""
        head, norm = self._head(), self.model.norm
        logits = head.lm_head_norm_forward(h, norm) if self.config.tie_word_embeddings else head.forward_norm(h, norm)
        return logits if logits.dtype == "float32" else logits.astype("float32")

    def embed(self, input_ids: Tensor) -> Tensor:
        return self.model.embed_tokens(input_ids)

    def prefill(self, input_embed: Tensor, kv_cache: PagedKVCache):
        if self._head_fuses_norm():  # the last token only is normed, inside the LM head (the decode step's kernel)
            return self._normed_logits(last_token(self.model.hidden(input_embed, kv_cache))), kv_cache
        h = self.model(input_embed, kv_cache)
        return self._logits(last_token(h)), kv_cache

    def decode(self, input_embed: Tensor, kv_cache: PagedKVCache):
        if self._head_fuses_norm():
            return self._normed_logits(self.model.hidden(input_embed, kv_cache)), kv_cache
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




def kv_cache_rope(cfg: LlamaConfig) -> dict[str, Any]:
    """The RoPE arguments of TVM's paged KV cache for ``cfg.rope_scaling`` (RoPE is applied as K/V are stored).

    ``linear`` scales positions (``rope_scale``); ``llama3`` is TVM's own frequency function. ``rope_mode``:
    ``"normal"`` (the cache rotates q and k) or ``"none"`` (the model did, :meth:`LlamaAttention.rotate`).
    """
    s = cfg.rope_scaling
    kind = s.get("rope_type")
    out: dict[str, Any] = {"rope_scale": 1, "rope_scaling": {}, "rope_ext_factors": None, "rope_mode": "normal"}
    if kind == "linear":
        out["rope_scale"] = 1.0 / s["factor"]
    elif kind == "llama3":
        out["rope_scaling"] = dict(s)
    elif kind:
        raise BadModel(f"rope_scaling {kind!r} is not implemented.")
    return out
