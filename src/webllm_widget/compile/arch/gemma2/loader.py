"""Gemma 2's checkpoint names: the Llama family's, plus the norms after attention and around the MLP
(``post_attention_layernorm`` normalizes the attention output; ``pre_feedforward_layernorm`` feeds the MLP).
GGUF files are not read (the config refuses them)."""
from __future__ import annotations

from ..llama import loader as llama
from .config import Gemma2Config

Source = llama.Source


def param_sources(cfg: Gemma2Config) -> list[Source]:
    out = llama.param_sources(cfg)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        out += [(f"{p}.{n}.weight", [f"{p}.{n}.weight"], False) for n in
                ("pre_feedforward_layernorm", "post_feedforward_layernorm")]
    return out


GGUF_NAMES = llama.GGUF_NAMES
GGUF_SKIP = llama.GGUF_SKIP
GGUF_PERMUTED_QK: tuple[str, ...] = ()
