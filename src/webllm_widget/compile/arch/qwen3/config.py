"""Qwen3's config keys: the Llama family's, read the same way (Qwen3 has no q/k/v bias and names ``head_dim``).

Example::

    from webllm_widget.compile.arch.qwen3.config import Qwen3Config
    cfg = Qwen3Config.from_dict({"architecture": "qwen3", "hidden_size": 64, "intermediate_size": 128,
                                 "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
                                 "num_hidden_layers": 2, "vocab_size": 256})
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

from ..llama import config as llama

MODEL_TYPES = ("qwen3",)
CHAT_CONFIG_KEYS = llama.CHAT_CONFIG_KEYS
_FAMILY = "the Qwen3 family"


@dataclasses.dataclass
class Qwen3Config(llama.LlamaConfig):
    """Shape and numerics of a Qwen3 model (the Llama config; q/k/v carry no bias)."""

    model_types: ClassVar[tuple[str, ...]] = MODEL_TYPES
    model_type: str = "qwen3"


def from_hf(hf: dict[str, Any], model_type: str, tensor_names: set[str], name: str,
            where: str = "config.json") -> dict[str, Any]:
    """``checkpoint.config`` from a Qwen3 ``config.json`` (see :func:`..llama.config.from_hf`)."""
    return llama.from_hf(hf, model_type, tensor_names, name, where, family=_FAMILY)


def from_gguf(get: Callable[[str, Any], Any], arch: str, model_type: str, tensor_names: set[str],
              vocab_rows: int, name: str, **kw: Any) -> dict[str, Any]:
    """``checkpoint.config`` from a ``qwen3`` GGUF's metadata (see :func:`..llama.config.from_gguf`)."""
    return llama.from_gguf(get, arch, model_type, tensor_names, vocab_rows, name, family=_FAMILY, **kw)
