"""Phi-3's checkpoint names: q/k/v come fused (``self_attn.qkv_proj``) and gate/up too (``mlp.gate_up_proj``, gate
rows first), which is the model's own layout; llama.cpp names them ``attn_qkv`` and ``ffn_up`` (gate and up fused,
no ``ffn_gate``). llama.cpp's LongRoPE factor tensors (``rope_factors_long/short``) are config, read by
:func:`.config.from_gguf`."""
from __future__ import annotations

import re

from ..llama import loader as llama
from .config import Phi3Config

Source = llama.Source


def param_sources(cfg: Phi3Config) -> list[Source]:
    """(module path, HF tensor names stacked along rows, is a matrix) for every module with weights."""
    out: list[Source] = []
    for path, names, is_matrix in llama.param_sources(cfg):
        if path.endswith("self_attn.qkv_proj") or path.endswith("mlp.gate_up_proj"):
            names = [path + ".weight"]
        out.append((path, names, is_matrix))
    return out


GGUF_NAMES = [(p, f) for p, f in llama.GGUF_NAMES if "ffn_up" not in p.pattern] + [
    (re.compile(r"^blk\.(\d+)\.attn_qkv\.weight$"), "model.layers.{0}.self_attn.qkv_proj.weight"),
    (re.compile(r"^blk\.(\d+)\.ffn_up\.weight$"), "model.layers.{0}.mlp.gate_up_proj.weight"),
]
GGUF_SKIP = re.compile(r"^(rope_factors_(long|short)\.weight|blk\.\d+\.attn_rot_embd)$")
GGUF_PERMUTED_QK: tuple[str, ...] = ()
#: tensors that carry config (LongRoPE's factors), handed to :func:`.config.from_gguf`
GGUF_CONFIG_TENSORS = ("rope_factors_short.weight", "rope_factors_long.weight")
