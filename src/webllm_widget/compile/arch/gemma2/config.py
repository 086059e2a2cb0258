"""Gemma 2's config keys (``Gemma2ForCausalLM`` / ``gemma2``).

Read beside the Llama family's keys: ``query_pre_attn_scalar`` (attention scale ``1/sqrt(scalar)``),
``attn_logit_softcapping`` (every attention score becomes ``cap * tanh(score / cap)`` before the softmax),
``final_logit_softcapping`` (the same on the logits), ``sliding_window`` (the even layers attend within it, or the
layers ``layer_types`` names), ``hidden_activation`` (must be ``gelu_pytorch_tanh``). A ``gemma2`` GGUF is read as
llama.cpp reads it (:func:`from_gguf`).

Example::

    from webllm_widget.compile.arch.gemma2.config import Gemma2Config
    cfg = Gemma2Config.from_dict({"architecture": "gemma2", "hidden_size": 64, ...})
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

from ..llama import config as llama

MODEL_TYPES = ("gemma2",)
CHAT_CONFIG_KEYS = llama.CHAT_CONFIG_KEYS + ("query_pre_attn_scalar", "attn_logit_softcapping",
                                            "final_logit_softcapping", "sliding_window")
_FAMILY = "the Gemma 2 family"
_READ = frozenset({"query_pre_attn_scalar", "hidden_activation", "attn_logit_softcapping", "final_logit_softcapping",
                   "cache_implementation", "sliding_window_size"})


def _cap(value: Any) -> float | None:
    return float(value) if value else None


@dataclasses.dataclass
class Gemma2Config(llama.LlamaConfig):
    """Shape and numerics of a Gemma 2 model."""

    model_types: ClassVar[tuple[str, ...]] = MODEL_TYPES
    model_type: str = "gemma2"
    query_pre_attn_scalar: float = 256.0
    #: None: no cap
    attn_logit_softcapping: float | None = None
    final_logit_softcapping: float | None = None
    rms_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        self.attn_logit_softcapping = _cap(self.attn_logit_softcapping)
        self.final_logit_softcapping = _cap(self.final_logit_softcapping)
        super().__post_init__()

    @classmethod
    def sliding_layers_from(cls, cfg: dict[str, Any]) -> list[int]:
        if cfg.get("layer_types"):
            return llama.sliding_layers_of(cfg)
        return list(range(0, int(cfg["num_hidden_layers"]), 2))


def from_hf(hf: dict[str, Any], model_type: str, tensor_names: set[str], name: str,
            where: str = "config.json") -> dict[str, Any]:
    """``checkpoint.config`` from a Gemma 2 ``config.json``."""
    act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
    if act != "gelu_pytorch_tanh":
        raise llama._refuse(where, "hidden_activation", act, "is not GeLU-tanh (Gemma 2's MLP is GeGLU-tanh)")
    window = hf.get("sliding_window") or hf.get("sliding_window_size")
    if hf.get("sliding_window_size") and hf.get("sliding_window") and hf["sliding_window_size"] != hf["sliding_window"]:
        raise llama._refuse(where, "sliding_window_size", hf["sliding_window_size"],
                            f"differs from sliding_window ({hf['sliding_window']})")
    base = {k: v for k, v in hf.items() if k not in ("hidden_activation", "hidden_act", "sliding_window_size")}
    if window:
        base["sliding_window"] = window
        if not hf.get("layer_types"):
            base["layer_types"] = ["sliding_attention" if i % 2 == 0 else "full_attention"
                                   for i in range(int(hf["num_hidden_layers"]))]
    config = llama.from_hf(base, model_type, tensor_names, name, where, read=_READ, family=_FAMILY)
    config.update(query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", config["head_dim"])),
                  attn_logit_softcapping=_cap(hf.get("attn_logit_softcapping")),
                  final_logit_softcapping=_cap(hf.get("final_logit_softcapping")),
                  rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)))
    return config


#: GGUF keys (after ``gemma2.``) Gemma 2 adds
_READ_GGUF = frozenset({"attention.sliding_window", "attn_logit_softcapping", "final_logit_softcapping"})
#: llama.cpp's caps for a ``gemma2`` GGUF that does not name them
GGUF_DEFAULT_CAPS = (50.0, 30.0)


def from_gguf(get: Callable[[str, Any], Any], arch: str, model_type: str, tensor_names: set[str],
              vocab_rows: int, name: str, **kw: Any) -> dict[str, Any]:
    """``checkpoint.config`` from a ``gemma2`` GGUF, as llama.cpp's converter writes it and llama.cpp reads it.

    The caps are ``gemma2.attn_logit_softcapping`` / ``final_logit_softcapping`` (llama.cpp's 50 and 30 when absent),
    the even layers attend within ``gemma2.attention.sliding_window``; the file has no ``query_pre_attn_scalar``:
    llama.cpp scales by ``head_dim ** -0.5``, except for the 46-layer (27B) model, ``(hidden / heads) ** -0.5``.
    """
    config = llama.from_gguf(get, arch, model_type, tensor_names, vocab_rows, name, family=_FAMILY,
                             read=_READ_GGUF, **kw)
    layers = config["num_hidden_layers"]
    scalar = (config["hidden_size"] / config["num_attention_heads"]) if layers == 46 else config["head_dim"]
    attn = get(f"{arch}.attn_logit_softcapping", GGUF_DEFAULT_CAPS[0])
    final = get(f"{arch}.final_logit_softcapping", GGUF_DEFAULT_CAPS[1])
    config.update(query_pre_attn_scalar=float(scalar), attn_logit_softcapping=_cap(attn),
                  final_logit_softcapping=_cap(final),
                  rms_norm_eps=float(get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)))
    window = get(f"{arch}.attention.sliding_window", None)
    if window and int(window) < config["max_position_embeddings"]:
        config["sliding_window"] = int(window)
        config["sliding_layers"] = list(range(0, layers, 2))
    return config
