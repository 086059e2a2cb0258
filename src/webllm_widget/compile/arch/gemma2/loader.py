"""Gemma 2's checkpoint names: the Llama family's, plus the norms after attention and around the MLP
(``post_attention_layernorm`` normalizes the attention output; ``pre_feedforward_layernorm`` feeds the MLP).

llama.cpp names those ``post_attention_norm``, ``ffn_norm`` (before the MLP) and ``post_ffw_norm``; its converter
adds one to every norm weight (its RMSNorm multiplies by the stored value, Gemma's by ``1 + w``), which
:data:`GGUF_SHIFTED` takes back off."""
from __future__ import annotations

import re

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


#: a GGUF layer tensor name's prefix, the layer index captured
LAYER_RE = r"^blk\.(\d+)\."
GGUF_NAMES = [(p, f) for p, f in llama.GGUF_NAMES if "ffn_norm" not in p.pattern] + [
    (re.compile(LAYER_RE + r"post_attention_norm\.weight$"), "model.layers.{0}.post_attention_layernorm.weight"),
    (re.compile(LAYER_RE + r"ffn_norm\.weight$"), "model.layers.{0}.pre_feedforward_layernorm.weight"),
    (re.compile(LAYER_RE + r"post_ffw_norm\.weight$"), "model.layers.{0}.post_feedforward_layernorm.weight"),
]
GGUF_SKIP = re.compile(r"^blk\.\d+\.attn_rot_embd$")
GGUF_PERMUTED_QK: tuple[str, ...] = ()
GGUF_CONFIG_TENSORS: tuple[str, ...] = ()
#: (HF names, offset): GGUF stores these norm weights as ``1 + w``
GGUF_SHIFTED = (re.compile(r"^model\.(norm|layers\.\d+\.(input_layernorm|post_attention_layernorm|"
                           r"pre_feedforward_layernorm|post_feedforward_layernorm))\.weight$"), 1.0)
