"""The Llama family's config keys: the shape dataclass, and how HF ``config.json`` and GGUF metadata spell each key.

Every reader of a checkpoint goes through :func:`from_hf` or :func:`from_gguf`, which give one HF-style dict
(``checkpoint.config``); :meth:`LlamaConfig.from_dict` turns that dict into the shape the model is built from.

Example::

    from webllm_widget.compile.arch.llama.config import LlamaConfig
    cfg = LlamaConfig.from_dict({"hidden_size": 64, "intermediate_size": 128,
                                 "num_attention_heads": 4, "num_key_value_heads": 2,
                                 "num_hidden_layers": 2, "vocab_size": 256})
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from ....errors import BadModel

#: ``architecture`` values this family builds.
MODEL_TYPES = ("llama", "qwen2", "mistral")

#: Keys of ``checkpoint.config`` copied into ``mlc-chat-config.json``'s ``model_config``.
CHAT_CONFIG_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                    "num_hidden_layers", "rms_norm_eps", "rope_theta", "vocab_size", "tie_word_embeddings",
                    "attention_bias")


@dataclasses.dataclass
class LlamaConfig:
    """Shape and numerics of a Llama-family model, read from an HF-style ``config.json`` dict."""

    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_hidden_layers: int
    vocab_size: int
    num_key_value_heads: int = 0
    head_dim: int = 0
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    context_window_size: int = 2048
    prefill_chunk_size: int = 128
    model_type: str = "llama"

    def __post_init__(self) -> None:
        if not self.num_key_value_heads:
            self.num_key_value_heads = self.num_attention_heads
        if not self.head_dim:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise BadModel(
                f"num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads}); this is not a Llama-family model.")
        self.prefill_chunk_size = max(1, min(self.prefill_chunk_size, self.context_window_size))

    @classmethod
    def from_dict(cls, cfg: dict[str, Any], **overrides: Any) -> "LlamaConfig":
        """Build from an HF-style config dict (unknown keys are ignored).

        ``context_window_size`` falls back to ``max_position_embeddings``; ``attention_bias``
        defaults to True for Qwen2, whose q/k/v projections carry biases.
        """
        arch = str(cfg.get("architecture") or cfg.get("model_type") or "llama").lower()
        if arch not in MODEL_TYPES:
            raise BadModel(f"architecture {arch!r} is not a Llama-family model; supported: {', '.join(MODEL_TYPES)}.",
                           detail={"architecture": arch})
        missing = [k for k in ("hidden_size", "intermediate_size", "num_attention_heads",
                               "num_hidden_layers", "vocab_size") if k not in cfg]
        if missing:
            raise BadModel(f"the model config lacks {', '.join(missing)}; pass a complete config.json.")
        kw: dict[str, Any] = {f.name: cfg[f.name] for f in dataclasses.fields(cls) if f.name in cfg}
        kw["model_type"] = arch
        if "context_window_size" not in cfg and "max_position_embeddings" in cfg:
            kw["context_window_size"] = cfg["max_position_embeddings"]
        if "attention_bias" not in cfg:
            kw["attention_bias"] = arch == "qwen2"
        kw.update(overrides)
        kw["head_dim"] = kw.get("head_dim") or 0
        kw["num_key_value_heads"] = kw.get("num_key_value_heads") or 0
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def from_hf(hf: dict[str, Any], model_type: str, tensor_names: set[str], name: str) -> dict[str, Any]:
    """``checkpoint.config`` from an HF ``config.json`` dict (``tensor_names``: the safetensors' tensors)."""
    n_head = int(hf["num_attention_heads"])
    hidden = int(hf["hidden_size"])
    ctx = int(hf.get("max_position_embeddings", 2048))
    config = {
        "architecture": model_type,
        "hidden_size": hidden,
        "intermediate_size": int(hf["intermediate_size"]),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(hf.get("num_key_value_heads") or n_head),
        "head_dim": int(hf.get("head_dim") or hidden // n_head),
        "num_hidden_layers": int(hf["num_hidden_layers"]),
        "rms_norm_eps": float(hf.get("rms_norm_eps", 1e-6)),
        "rope_theta": float(hf.get("rope_theta", 10000.0)),
        "vocab_size": int(hf["vocab_size"]),
        "tie_word_embeddings": bool(hf.get("tie_word_embeddings", False)) or "lm_head.weight" not in tensor_names,
        "max_position_embeddings": ctx,
        "context_window_size": ctx,
        "attention_bias": bool(hf.get("attention_bias", model_type == "qwen2")),
        "bos_token_id": hf.get("bos_token_id"),
        "eos_token_id": hf.get("eos_token_id"),
        "name": name,
    }
    if hf.get("rope_scaling"):
        config["rope_scaling"] = hf["rope_scaling"]
    return config


def from_gguf(get: Callable[[str, Any], Any], arch: str, model_type: str, tensor_names: set[str],
              gguf_tensor_names: set[str], vocab_rows: int, name: str) -> dict[str, Any]:
    """``checkpoint.config`` from GGUF metadata (``get(key, default)``; keys are prefixed by the file's ``arch``).

    ``tensor_names``: the HF names the file's tensors map to; ``gguf_tensor_names``: the file's own names;
    ``vocab_rows``: rows of the token embedding (the vocabulary size when the metadata lacks it).
    """
    a = arch
    n_head = int(get(f"{a}.attention.head_count", None))
    hidden = int(get(f"{a}.embedding_length", None))
    n_kv = int(get(f"{a}.attention.head_count_kv", n_head))
    vocab = int(get(f"{a}.vocab_size", 0) or vocab_rows)
    ctx = int(get(f"{a}.context_length", 2048))
    head_dim = int(get(f"{a}.attention.key_length", hidden // n_head))
    tokens_bos = get("tokenizer.ggml.bos_token_id", None)
    tokens_eos = get("tokenizer.ggml.eos_token_id", None)
    config = {
        "architecture": model_type,
        "hidden_size": hidden,
        "intermediate_size": int(get(f"{a}.feed_forward_length", None)),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "num_hidden_layers": int(get(f"{a}.block_count", None)),
        "rms_norm_eps": float(get(f"{a}.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(get(f"{a}.rope.freq_base", 10000.0)),
        "vocab_size": vocab,
        "tie_word_embeddings": "lm_head.weight" not in tensor_names,
        "max_position_embeddings": ctx,
        "context_window_size": ctx,
        "attention_bias": "model.layers.0.self_attn.q_proj.bias" in tensor_names,
        "bos_token_id": None if tokens_bos is None else int(tokens_bos),
        "eos_token_id": None if tokens_eos is None else int(tokens_eos),
        "name": name,
    }
    scaling_type = get(f"{a}.rope.scaling.type", None)
    if scaling_type is not None or "rope_freqs.weight" in gguf_tensor_names:
        config["rope_scaling"] = {
            "type": scaling_type,
            "factor": get(f"{a}.rope.scaling.factor", None),
            "original_max_position_embeddings": get(f"{a}.rope.scaling.original_context_length", None),
        }
    return config
