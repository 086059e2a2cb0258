"""Qwen3's checkpoint names: the Llama family's, plus each layer's q/k head norms (HF ``self_attn.q_norm`` /
``k_norm``, llama.cpp ``attn_q_norm`` / ``attn_k_norm``). llama.cpp does not permute Qwen3's q/k rows."""
from __future__ import annotations

import re

from ..llama import loader as llama
from .config import Qwen3Config

Source = llama.Source


def param_sources(cfg: Qwen3Config) -> list[Source]:
    """(module path, HF tensor names stacked along rows, is a matrix) for every module with weights."""
    out = llama.param_sources(cfg)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}.self_attn"
        out += [(f"{p}.q_norm.weight", [f"{p}.q_norm.weight"], False),
                (f"{p}.k_norm.weight", [f"{p}.k_norm.weight"], False)]
    return out


GGUF_NAMES = llama.GGUF_NAMES + [
    (re.compile(r"^blk\.(\d+)\.attn_q_norm\.weight$"), "model.layers.{0}.self_attn.q_norm.weight"),
    (re.compile(r"^blk\.(\d+)\.attn_k_norm\.weight$"), "model.layers.{0}.self_attn.k_norm.weight"),
]
GGUF_SKIP = llama.GGUF_SKIP
GGUF_PERMUTED_QK: tuple[str, ...] = ()
