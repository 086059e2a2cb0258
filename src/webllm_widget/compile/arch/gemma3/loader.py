"""Gemma 3's checkpoint names: Gemma 2's (the Llama family's plus the norms after attention and around the MLP,
GGUF norm weights stored as ``1 + w``) plus the q/k head norms, which llama.cpp names ``attn_q_norm``/``attn_k_norm``
and also stores shifted (:data:`GGUF_SHIFTED`)."""
from __future__ import annotations

import re

from ..gemma2 import loader as gemma2
from ..llama import loader as llama
from .config import Gemma3Config

Source = llama.Source


def param_sources(cfg: Gemma3Config) -> list[Source]:
    out = llama.param_sources(cfg)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        out += [(f"{p}.{n}.weight", [f"{p}.{n}.weight"], False) for n in
                ("self_attn.q_norm", "self_attn.k_norm", "pre_feedforward_layernorm", "post_feedforward_layernorm")]
    return out


GGUF_NAMES = gemma2.GGUF_NAMES + [
    (re.compile(gemma2.LAYER_RE + r"attn_q_norm\.weight$"), "model.layers.{0}.self_attn.q_norm.weight"),
    (re.compile(gemma2.LAYER_RE + r"attn_k_norm\.weight$"), "model.layers.{0}.self_attn.k_norm.weight"),
]
GGUF_SKIP = gemma2.GGUF_SKIP
GGUF_PERMUTED_QK = gemma2.GGUF_PERMUTED_QK
GGUF_CONFIG_TENSORS = gemma2.GGUF_CONFIG_TENSORS
#: (HF names, offset): GGUF stores these norm weights as ``1 + w``
GGUF_SHIFTED = (re.compile(r"^model\.(norm|layers\.\d+\.(input_layernorm|post_attention_layernorm|"
                           r"pre_feedforward_layernorm|post_feedforward_layernorm|self_attn\.[qk]_norm))\.weight$"),
                1.0)
