"""Gemma 3's config keys (the text model, ``Gemma3ForCausalLM`` / ``gemma3_text``).

Read beside the Llama family's keys: ``query_pre_attn_scalar`` (attention scale ``1/sqrt(scalar)``),
``rope_local_base_freq`` (RoPE base of the sliding-window layers; the global ones use ``rope_theta`` and
``rope_scaling``), ``sliding_window`` with ``sliding_window_pattern`` or ``layer_types`` (which layers slide),
``hidden_activation`` (must be ``gelu_pytorch_tanh``). The sliding layers attend within ``sliding_window`` (the
paged KV cache's windowed layers). Soft-capping (Gemma 2's) is refused when set.

Example::

    from webllm_widget.compile.arch.gemma3.config import Gemma3Config
    cfg = Gemma3Config.from_dict({"architecture": "gemma3_text", "hidden_size": 64, ...})
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

from ..llama import config as llama

MODEL_TYPES = ("gemma3_text",)
CHAT_CONFIG_KEYS = llama.CHAT_CONFIG_KEYS + ("query_pre_attn_scalar", "rope_local_base_freq",
                                            "sliding_window_pattern")
_FAMILY = "the Gemma 3 family"
_READ = frozenset({"query_pre_attn_scalar", "rope_local_base_freq", "sliding_window_pattern", "hidden_activation",
                   "attn_logit_softcapping", "final_logit_softcapping", "cache_implementation"})


@dataclasses.dataclass
class Gemma3Config(llama.LlamaConfig):
    """Shape and numerics of a Gemma 3 text model."""

    model_types: ClassVar[tuple[str, ...]] = MODEL_TYPES
    model_type: str = "gemma3_text"
    query_pre_attn_scalar: float = 256.0
    rope_local_base_freq: float = 10000.0
    sliding_window_pattern: int = 6
    rms_norm_eps: float = 1e-6

    def is_sliding(self, layer: int) -> bool:
        """Whether ``layer`` is a sliding-window (local) layer: all but every ``sliding_window_pattern``-th."""
        return bool((layer + 1) % self.sliding_window_pattern)

    @classmethod
    def sliding_layers_from(cls, cfg: dict[str, Any]) -> list[int]:
        if cfg.get("layer_types"):
            return llama.sliding_layers_of(cfg)
        pattern = int(cfg.get("sliding_window_pattern", 6))
        return [i for i in range(int(cfg["num_hidden_layers"])) if (i + 1) % pattern]


def from_hf(hf: dict[str, Any], model_type: str, tensor_names: set[str], name: str,
            where: str = "config.json") -> dict[str, Any]:
    """``checkpoint.config`` from a Gemma 3 text ``config.json``."""
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if hf.get(key) is not None:
            raise llama._refuse(where, key, hf[key], "asks for logit soft-capping, which is not implemented")
    act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
    if act != "gelu_pytorch_tanh":
        raise llama._refuse(where, "hidden_activation", act, "is not GeLU-tanh (Gemma 3's MLP is GeGLU-tanh)")
    pattern = int(hf.get("sliding_window_pattern", 6))
    n = int(hf["num_hidden_layers"])
    if hf.get("layer_types"):
        want = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n)]
        if list(hf["layer_types"]) != want:
            raise llama._refuse(where, "layer_types", hf["layer_types"], "is not every "
                                f"{pattern}th layer global, the only layout implemented")
    base = {k: v for k, v in hf.items() if k not in ("hidden_activation", "hidden_act")}
    base["layer_types"] = [("sliding_attention" if (i + 1) % pattern else "full_attention") for i in range(n)]
    config = llama.from_hf(base, model_type, tensor_names, name, where, read=_READ, family=_FAMILY)
    config.update(query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", config["head_dim"])),
                  rope_local_base_freq=float(hf.get("rope_local_base_freq", 10000.0)),
                  sliding_window_pattern=pattern, rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)))
    return config


#: GGUF keys (after ``gemma3.``) Gemma 3 adds; the soft-capping ones are refused when set
_READ_GGUF = frozenset({"attention.sliding_window", "attention.sliding_window_pattern", "rope.freq_base_swa",
                        "attn_logit_softcapping", "final_logit_softcapping"})
#: What llama.cpp assumes for a ``gemma3`` GGUF that does not say (it hard-codes them for the architecture)
GGUF_DEFAULT_PATTERN = 6
GGUF_DEFAULT_LOCAL_BASE = 10000.0


def _gguf_pattern(value: Any, layers: int, where: str) -> int:
    """``sliding_window_pattern`` from the GGUF key: a period, or one flag per layer (true: sliding)."""
    if isinstance(value, (list, tuple)):
        flags = [bool(v) for v in value]
        for period in range(1, layers + 2):
            if flags == [bool((i + 1) % period) for i in range(len(flags))]:
                return period
        raise llama._refuse(where, "gemma3.attention.sliding_window_pattern", flags, "is not every n-th layer "
                            "global, the only layout implemented")
    return int(value)


def from_gguf(get: Callable[[str, Any], Any], arch: str, model_type: str, tensor_names: set[str],
              vocab_rows: int, name: str, **kw: Any) -> dict[str, Any]:
    """``checkpoint.config`` from a ``gemma3`` GGUF, as llama.cpp's converter writes it and llama.cpp reads it.

    The file does not carry every Gemma 3 key; for the missing ones this follows llama.cpp, which defines the
    format: the sliding-window layers' RoPE base is 10000 (``gemma3.rope.freq_base_swa`` when present), every
    sixth layer is global (``gemma3.attention.sliding_window_pattern`` when present), and the attention scale is
    ``head_dim ** -0.5``, except for the 62-layer (27B) model, ``(hidden / heads) ** -0.5``. The MLP is GeGLU-tanh.
    """
    where = kw.get("where", "GGUF")
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        value = get(f"{arch}.{key}", None)
        if value:
            raise llama._refuse(where, f"{arch}.{key}", value, "asks for logit soft-capping, which is not implemented")
    config = llama.from_gguf(get, arch, model_type, tensor_names, vocab_rows, name, family=_FAMILY,
                             read=_READ_GGUF, **kw)
    layers = config["num_hidden_layers"]
    pattern = get(f"{arch}.attention.sliding_window_pattern", None)
    scalar = (config["hidden_size"] / config["num_attention_heads"]) if layers == 62 else config["head_dim"]
    config.update(query_pre_attn_scalar=float(scalar),
                  rope_local_base_freq=float(get(f"{arch}.rope.freq_base_swa", GGUF_DEFAULT_LOCAL_BASE)),
                  sliding_window_pattern=GGUF_DEFAULT_PATTERN if pattern is None else _gguf_pattern(pattern, layers,
                                                                                                     where),
                  rms_norm_eps=float(get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)))
    window = get(f"{arch}.attention.sliding_window", None)
    layers_slide = [i for i in range(layers) if (i + 1) % config["sliding_window_pattern"]]
    if window and layers_slide and int(window) < config["max_position_embeddings"]:
        config["sliding_window"] = int(window)
        config["sliding_layers"] = layers_slide
    return config
