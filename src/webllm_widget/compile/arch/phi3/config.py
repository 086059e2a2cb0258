"""Phi-3's config keys: the Llama family's, plus LongRoPE (``rope_scaling`` of type ``longrope``/``su``).

LongRoPE divides each RoPE frequency by a per-frequency factor, ``short_factor`` while the sequence fits
``original_max_position_embeddings`` and ``long_factor`` beyond, and multiplies cos and sin by
``sqrt(1 + ln(s) / ln(original))`` with ``s = max_position_embeddings / original`` (the attention factor).
TVM's KV cache switches factors on the length of one forward call, not the whole sequence, so the two rules
agree only up to ``original``: the context window is capped there (the short factors are the ones used) and
the long factors never are. A config naming another attention factor is refused.

Example::

    from webllm_widget.compile.arch.phi3.config import Phi3Config
    cfg = Phi3Config.from_dict({"architecture": "phi3", "hidden_size": 64, ...})
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar

from ....errors import BadModel
from ..llama import config as llama

MODEL_TYPES = ("phi3",)
CHAT_CONFIG_KEYS = llama.CHAT_CONFIG_KEYS
_FAMILY = "the Phi-3 family"
#: config.json keys Phi-3 adds (``auto_map`` names remote code; ``original_max_position_embeddings`` is LongRoPE's)
_READ = frozenset({"auto_map", "original_max_position_embeddings", "partial_rotary_factor"})


def longrope_attention_factor(max_positions: float, original: float) -> float:
    s = max_positions / original
    return math.sqrt(1 + math.log(s) / math.log(original)) if s > 1 else 1.0


def rope_scaling_of(scaling: dict[str, Any] | None, where: str = "the model config", *,
                    max_positions: int | None = None, original: int | None = None) -> dict[str, Any]:
    """Normalized ``rope_scaling``: the Llama family's kinds, or ``{"rope_type": "longrope", short_factor,
    long_factor, max_position_embeddings, original_max_position_embeddings}``."""
    kind = str((scaling or {}).get("rope_type") or (scaling or {}).get("type") or "default").lower()
    if kind not in ("longrope", "su"):
        return llama.rope_scaling_of(scaling, where)
    if scaling.get("original_max_position_embeddings"):
        original = scaling["original_max_position_embeddings"]
    missing = [k for k, v in (("short_factor", scaling.get("short_factor")),
                              ("long_factor", scaling.get("long_factor")),
                              ("original_max_position_embeddings", original),
                              ("max_position_embeddings", max_positions)) if v is None]
    if missing:
        raise BadModel(f"{where}: longrope RoPE scaling lacks {', '.join(missing)}; the config is incomplete: "
                       "download it again.")
    want = longrope_attention_factor(float(max_positions), float(original))
    given = scaling.get("attention_factor")
    if given is not None and abs(float(given) - want) > 1e-6:
        raise BadModel(f"{where}: longrope attention_factor {given} differs from sqrt(1 + ln(s) / ln(original)) "
                       f"= {want:.6f}, the only one implemented; webllm-widget refuses it rather than run the model "
                       "wrong.", detail={"key": "rope_scaling.attention_factor", "value": given})
    return {"rope_type": "longrope", "short_factor": [float(x) for x in scaling["short_factor"]],
            "long_factor": [float(x) for x in scaling["long_factor"]],
            "max_position_embeddings": int(max_positions), "original_max_position_embeddings": int(original)}


@dataclasses.dataclass
class Phi3Config(llama.LlamaConfig):
    """Shape and numerics of a Phi-3 model (the Llama config; ``rope_scaling`` may be LongRoPE)."""

    model_types: ClassVar[tuple[str, ...]] = MODEL_TYPES
    model_type: str = "phi3"

    @classmethod
    def rope_scaling_from(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        s = cfg.get("rope_scaling")
        if s and s.get("rope_type") == "longrope" and "max_position_embeddings" in s:
            return dict(s)  # normalized already (checkpoint.config)
        return rope_scaling_of(s, max_positions=cfg.get("max_position_embeddings"),
                               original=cfg.get("original_max_position_embeddings"))


def from_hf(hf: dict[str, Any], model_type: str, tensor_names: set[str], name: str,
            where: str = "config.json") -> dict[str, Any]:
    """``checkpoint.config`` from a Phi-3 ``config.json``; LongRoPE caps the context at the original length."""
    if float(hf.get("partial_rotary_factor", 1.0)) != 1.0:
        raise llama._refuse(where, "partial_rotary_factor", hf["partial_rotary_factor"],
                            "rotates only part of each head, which is not implemented")

    def scaling(s, w):
        return rope_scaling_of(s, w, max_positions=hf.get("max_position_embeddings"),
                               original=hf.get("original_max_position_embeddings"))

    config = llama.from_hf(hf, model_type, tensor_names, name, where, read=_READ, family=_FAMILY,
                           rope_scaling=scaling)
    rs = scaling(hf.get("rope_scaling"), where)
    if rs:
        config["rope_scaling"] = rs
    if rs.get("rope_type") == "longrope":
        config["context_window_size"] = min(config["context_window_size"], rs["original_max_position_embeddings"])
    return config


#: GGUF keys (after ``phi3.``) Phi-3 adds: LongRoPE's attention factor and the attention window
_READ_GGUF = frozenset({"rope.scaling.attn_factor", "attention.sliding_window"})


def from_gguf(get: Callable[[str, Any], Any], arch: str, model_type: str, tensor_names: set[str],
              vocab_rows: int, name: str, *, config_tensors: dict | None = None, **kw: Any) -> dict[str, Any]:
    """``checkpoint.config`` from a ``phi3`` GGUF, as llama.cpp's converter writes it.

    LongRoPE: the factors are the tensors ``rope_factors_short`` / ``rope_factors_long`` (one per frequency),
    ``phi3.context_length`` is ``max_position_embeddings``, ``phi3.rope.scaling.original_context_length`` the
    original context and ``phi3.rope.scaling.attn_factor`` the factor on cos/sin (checked against the one
    implemented). ``phi3.attention.sliding_window`` (0 for none) windows every layer, as the HF folder's
    ``sliding_window`` does.
    """
    where = kw.get("where", "GGUF")
    config = llama.from_gguf(get, arch, model_type, tensor_names, vocab_rows, name, family=_FAMILY,
                             read=_READ_GGUF, **kw)
    tensors = config_tensors or {}
    short, long = tensors.get("rope_factors_short.weight"), tensors.get("rope_factors_long.weight")
    if (short is None) != (long is None):
        raise BadModel(f"{where}: the file has only one of rope_factors_short/rope_factors_long; LongRoPE needs both. "
                       "Download the file again.")
    if short is not None:
        original = get(f"{arch}.rope.scaling.original_context_length", None)
        scaling = {"rope_type": "longrope", "short_factor": [float(x) for x in short],
                   "long_factor": [float(x) for x in long], "original_max_position_embeddings": original}
        attn = get(f"{arch}.rope.scaling.attn_factor", None)
        if attn is not None:
            scaling["attention_factor"] = float(attn)
        rs = rope_scaling_of(scaling, where, max_positions=config["max_position_embeddings"], original=original)
        if len(rs["short_factor"]) != config["head_dim"] // 2:
            raise BadModel(f"{where}: rope_factors_short has {len(rs['short_factor'])} values, a head of "
                           f"{config['head_dim']} dimensions needs {config['head_dim'] // 2}. Download the file again.")
        config["rope_scaling"] = rs
        config["context_window_size"] = min(config["context_window_size"], rs["original_max_position_embeddings"])
    window = int(get(f"{arch}.attention.sliding_window", 0) or 0)
    if window and window < config["max_position_embeddings"]:
        config["sliding_window"] = window
        config["sliding_layers"] = list(range(config["num_hidden_layers"]))
    return config
