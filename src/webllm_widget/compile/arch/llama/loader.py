"""The Llama family's checkpoint names: HF tensors → the model's parameters, and GGUF tensors → HF names.

:func:`param_sources` lists, for each module with weights, the HF tensors that fill it (stacked along rows:
q/k/v into ``qkv_proj``, gate/up into ``gate_up_proj``). The GGUF table maps llama.cpp's tensor names onto HF
names, so one map serves both kinds of checkpoint.
"""
from __future__ import annotations

import re

from .config import LlamaConfig

#: (module path, HF tensor names stacked along rows, is a matrix)
Source = tuple[str, list[str], bool]


def param_sources(cfg: LlamaConfig) -> list[Source]:
    """(module path, HF tensor names stacked along rows, is a matrix) for every module with weights."""
    out: list[Source] = [("model.embed_tokens", ["model.embed_tokens.weight"], True)]
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        out.append((f"{p}.self_attn.qkv_proj", [f"{p}.self_attn.{x}_proj.weight" for x in "qkv"], True))
        if cfg.attention_bias:
            out.append((f"{p}.self_attn.qkv_proj.bias", [f"{p}.self_attn.{x}_proj.bias" for x in "qkv"], False))
        out.append((f"{p}.self_attn.o_proj", [f"{p}.self_attn.o_proj.weight"], True))
        out.append((f"{p}.mlp.gate_up_proj", [f"{p}.mlp.gate_proj.weight", f"{p}.mlp.up_proj.weight"], True))
        out.append((f"{p}.mlp.down_proj", [f"{p}.mlp.down_proj.weight"], True))
        out.append((f"{p}.input_layernorm.weight", [f"{p}.input_layernorm.weight"], False))
        out.append((f"{p}.post_attention_layernorm.weight", [f"{p}.post_attention_layernorm.weight"], False))
    out.append(("model.norm.weight", ["model.norm.weight"], False))
    if not cfg.tie_word_embeddings:
        out.append(("lm_head", ["lm_head.weight"], True))
    return out


#: llama.cpp tensor name pattern -> HF name (groups fill the ``{}``)
GGUF_NAMES = [
    (re.compile(r"^token_embd\.weight$"), "model.embed_tokens.weight"),
    (re.compile(r"^output_norm\.weight$"), "model.norm.weight"),
    (re.compile(r"^output\.weight$"), "lm_head.weight"),
    (re.compile(r"^blk\.(\d+)\.attn_norm\.weight$"), "model.layers.{0}.input_layernorm.weight"),
    (re.compile(r"^blk\.(\d+)\.ffn_norm\.weight$"), "model.layers.{0}.post_attention_layernorm.weight"),
    (re.compile(r"^blk\.(\d+)\.attn_q\.(weight|bias)$"), "model.layers.{0}.self_attn.q_proj.{1}"),
    (re.compile(r"^blk\.(\d+)\.attn_k\.(weight|bias)$"), "model.layers.{0}.self_attn.k_proj.{1}"),
    (re.compile(r"^blk\.(\d+)\.attn_v\.(weight|bias)$"), "model.layers.{0}.self_attn.v_proj.{1}"),
    (re.compile(r"^blk\.(\d+)\.attn_output\.weight$"), "model.layers.{0}.self_attn.o_proj.weight"),
    (re.compile(r"^blk\.(\d+)\.ffn_gate\.weight$"), "model.layers.{0}.mlp.gate_proj.weight"),
    (re.compile(r"^blk\.(\d+)\.ffn_up\.weight$"), "model.layers.{0}.mlp.up_proj.weight"),
    (re.compile(r"^blk\.(\d+)\.ffn_down\.weight$"), "model.layers.{0}.mlp.down_proj.weight"),
]

#: Tensors that are not parameters: llama.cpp's per-frequency RoPE divisors (read into the config's
#: ``rope_scaling`` by the GGUF reader) and a legacy precomputed rotation table.
GGUF_SKIP = re.compile(r"^(rope_freqs\.weight|blk\.\d+\.attn_rot_embd)$")

#: GGUF architectures whose q/k rows llama.cpp's converter permuted (the reader undoes it).
GGUF_PERMUTED_QK = ("llama",)
