"""The Llama family's config keys: the shape dataclass, and how HF ``config.json`` and GGUF metadata spell each key.

Every reader of a checkpoint goes through :func:`from_hf` or :func:`from_gguf`, which give one HF-style dict
(``checkpoint.config``); :meth:`LlamaConfig.from_dict` turns that dict into the shape the model is built from.

A key that would change the maths and is not implemented stops the build with :class:`BadModel` naming it:
each reader knows which keys it reads, which it knows to be harmless, and refuses the rest (a key it has
never seen may change the computation, so it is not ignored). RoPE scaling: ``linear`` and ``llama3`` are
implemented (llama.cpp stores ``llama3`` as a divisor per frequency, ``rope_freqs.weight``; the rule is recovered
from them and checked to reproduce every one); ``dynamic``, ``yarn``, ``longrope`` and the rest are refused.

Example::

    from webllm_widget.compile.arch.llama.config import LlamaConfig
    cfg = LlamaConfig.from_dict({"hidden_size": 64, "intermediate_size": 128,
                                 "num_attention_heads": 4, "num_key_value_heads": 2,
                                 "num_hidden_layers": 2, "vocab_size": 256})
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

import numpy as np

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

    #: ``architecture`` values this config class builds (a family subclassing it sets its own)
    model_types: ClassVar[tuple[str, ...]] = MODEL_TYPES

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
    #: normalized RoPE scaling ({} for none; see :func:`rope_scaling_of`)
    rope_scaling: dict = dataclasses.field(default_factory=dict)
    #: attention window of the layers in ``sliding_layers`` (each query sees itself and the ``sliding_window - 1``
    #: keys before it); 0: every layer attends to the whole context
    sliding_window: int = 0
    sliding_layers: list = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.num_key_value_heads:
            self.num_key_value_heads = self.num_attention_heads
        if not self.head_dim:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise BadModel(
                f"num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads}); this is not a Llama-family model.")
        self.sliding_window = int(self.sliding_window or 0)
        self.sliding_layers = sorted(int(i) for i in self.sliding_layers) if self.sliding_window else []
        if not self.sliding_layers:
            self.sliding_window = 0
        self.prefill_chunk_size = max(1, min(self.prefill_chunk_size, self.context_window_size))
        if self.sliding_layers:
            # The paged KV cache windows the keys of earlier chunks only; within a chunk attention is plainly
            # causal, which is the window's maths only while a chunk is no longer than the window.
            self.prefill_chunk_size = min(self.prefill_chunk_size, self.sliding_window)

    def attn_kinds(self) -> list[str]:
        """Each layer's attention for the paged KV cache: ``"mha_sliding"`` (windowed) or ``"mha"``."""
        slide = set(self.sliding_layers)
        return ["mha_sliding" if i in slide else "mha" for i in range(self.num_hidden_layers)]

    @classmethod
    def from_dict(cls, cfg: dict[str, Any], **overrides: Any) -> "LlamaConfig":
        """Build from an HF-style config dict (``checkpoint.config``; its keys were checked by the reader).

        ``context_window_size`` falls back to ``max_position_embeddings``; ``attention_bias``
        defaults to True for Qwen2, whose q/k/v projections carry biases.
        """
        arch = str(cfg.get("architecture") or cfg.get("model_type") or cls.model_types[0]).lower()
        if arch not in cls.model_types:
            raise BadModel(f"architecture {arch!r} is not a model {cls.__name__} describes; supported: "
                           f"{', '.join(cls.model_types)}.", detail={"architecture": arch})
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
        kw["rope_scaling"] = cls.rope_scaling_from(cfg)
        if "sliding_layers" not in cfg:  # an HF config.json's own keys
            window = sliding_window_of(cfg)
            kw["sliding_window"] = window or 0
            kw["sliding_layers"] = cls.sliding_layers_from(cfg) if window else []
        kw.update(overrides)
        kw["head_dim"] = kw.get("head_dim") or 0
        kw["num_key_value_heads"] = kw.get("num_key_value_heads") or 0
        return cls(**kw)

    @classmethod
    def rope_scaling_from(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """The normalized ``rope_scaling`` of an HF-style config dict (a family with other scalings overrides it)."""
        return rope_scaling_of(cfg.get("rope_scaling"))

    @classmethod
    def sliding_layers_from(cls, cfg: dict[str, Any]) -> list[int]:
        """The windowed layers of an HF-style config dict (a family with its own layout overrides it)."""
        return sliding_layers_of(cfg)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def rope_scaling_of(scaling: dict[str, Any] | None, where: str = "the model config") -> dict[str, Any]:
    """A config's ``rope_scaling`` normalized to what the KV cache implements, or :class:`BadModel`.

    ``{}`` (none), ``{"rope_type": "linear", "factor"}``, ``{"rope_type": "llama3", factor, low_freq_factor,
    high_freq_factor, original_max_position_embeddings}``.
    """
    if not scaling:
        return {}
    kind = str(scaling.get("rope_type") or scaling.get("type") or "default").lower()
    if kind == "default":
        return {}
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(scaling["factor"])}
    if kind == "llama3":
        missing = [k for k in _LLAMA3_KEYS if scaling.get(k) is None]
        if missing:
            raise BadModel(f"{where}: rope_scaling of type llama3 lacks {', '.join(missing)}; the config is "
                           "incomplete: download it again.")
        return {"rope_type": "llama3", **{k: float(scaling[k]) for k in _LLAMA3_KEYS}}
    raise BadModel(f"{where}: rope_scaling type {kind!r} changes the model's positions and is not implemented "
                   "(implemented: linear, llama3); webllm-widget refuses it rather than run the model wrong. "
                   "Pick a checkpoint without it, or one of a supported scaling.",
                   detail={"key": "rope_scaling", "rope_type": kind})


#: config.json keys that do not change the computation (bookkeeping, training-only or tokenizer ids).
_HARMLESS_HF = frozenset({
    "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "use_cache", "initializer_range",
    "bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "sep_token_id", "decoder_start_token_id",
    "pretraining_tp", "attention_dropout", "hidden_dropout", "embd_pdrop", "resid_pdrop", "_name_or_path",
    "output_attentions", "output_hidden_states", "return_dict", "torchscript", "use_return_dict",
    "_attn_implementation", "id2label", "label2id", "problem_type", "tokenizer_class", "is_encoder_decoder",
    "task_specific_params", "finetuning_task", "prefix", "use_bfloat16", "pruned_heads", "tf_legacy_loss",
    "max_length", "temperature", "top_p", "top_k", "do_sample", "generation_config",
})
#: config.json keys this family reads (the values it cannot compute are refused in :func:`_check_hf_values`).
_READ_HF = frozenset({
    "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
    "num_hidden_layers", "rms_norm_eps", "rope_theta", "vocab_size", "tie_word_embeddings",
    "max_position_embeddings", "attention_bias", "rope_scaling", "hidden_act", "mlp_bias", "sliding_window",
    "use_sliding_window", "max_window_layers", "use_mrope", "layer_types",
})


def _refuse(where: str, key: str, value: Any, why: str) -> BadModel:
    return BadModel(f"{where}: config key {key!r} = {value!r} {why}; webllm-widget refuses it rather than run the "
                    "model wrong. Pick a checkpoint without it (or remove the key if you know it does not change "
                    "the computation).", detail={"key": key, "value": value})


def _check_hf_values(hf: dict[str, Any], where: str, read: frozenset = frozenset(),
                     family: str = "the Llama family", rope_scaling: Callable | None = None) -> None:
    """Refuse keys this family does not know, and known keys with values it does not compute.

    ``read``: more keys the calling family reads itself (checked by it).
    """
    for key, value in hf.items():
        if key not in _READ_HF and key not in _HARMLESS_HF and key not in read:
            raise _refuse(where, key, value, f"is not known to {family} and may change the maths")
    kinds = set(hf.get("layer_types") or ()) - {"full_attention", "sliding_attention"}
    if kinds:
        raise _refuse(where, "layer_types", sorted(kinds), "names layer kinds that are not implemented")
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise _refuse(where, "hidden_act", act, "is not SiLU (the Llama MLP is SwiGLU)")
    if hf.get("mlp_bias"):
        raise _refuse(where, "mlp_bias", True, "adds MLP biases, which are not implemented")
    if hf.get("use_mrope"):
        raise _refuse(where, "use_mrope", True, "asks for multimodal RoPE, which is not implemented")
    (rope_scaling or rope_scaling_of)(hf.get("rope_scaling"), where)


def sliding_window_of(hf: dict[str, Any]) -> int | None:
    """The attention window some or all layers use, or None (full attention on every layer).

    ``layer_types`` (newer configs) says per layer; without it ``use_sliding_window`` (Qwen2) or the presence of
    ``sliding_window`` (Mistral) does.
    """
    window = hf.get("sliding_window")
    if hf.get("layer_types"):
        if "sliding_attention" not in hf["layer_types"]:
            return None
        if not window:
            raise BadModel("the model config has sliding_attention layers but no sliding_window; the config is "
                           "incomplete: download it again.")
        return int(window)
    if not window or hf.get("use_sliding_window") is False:
        return None
    return int(window)


def sliding_layers_of(hf: dict[str, Any]) -> list[int]:
    """The layers that attend within ``sliding_window``: ``layer_types``' ``sliding_attention`` layers; without it
    Qwen2's layers from ``max_window_layers`` on (when ``use_sliding_window``), else every layer (Mistral)."""
    n = int(hf["num_hidden_layers"])
    if hf.get("layer_types"):
        return [i for i, kind in enumerate(hf["layer_types"]) if kind == "sliding_attention"]
    if hf.get("use_sliding_window") and hf.get("max_window_layers") is not None:
        return list(range(int(hf["max_window_layers"]), n))
    return list(range(n))


def from_hf(hf: dict[str, Any], model_type: str, tensor_names: set[str], name: str,
            where: str = "config.json", *, read: frozenset = frozenset(), family: str = "the Llama family",
            rope_scaling: Callable | None = None) -> dict[str, Any]:
    """``checkpoint.config`` from an HF ``config.json`` dict (``tensor_names``: the safetensors' tensors).

    Raises :class:`BadModel` for a key that changes the maths and is not implemented. A sliding window
    (Mistral, or some layers of a ``layer_types`` config) shorter than the trained context becomes
    ``sliding_window`` and ``sliding_layers``: the paged KV cache windows those layers' attention (TVM's
    ``mha_sliding`` layers). ``read``: keys the calling family reads itself; ``rope_scaling``: the family's own
    :func:`rope_scaling_of`.
    """
    _check_hf_values(hf, where, read, family, rope_scaling)
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
    window = sliding_window_of(hf)
    if window is not None and window < ctx:
        config["sliding_window"] = window
        config["sliding_layers"] = sliding_layers_of(hf)
    return config


#: GGUF metadata keys (after ``<arch>.``) this family reads or knows not to change the computation.
_READ_GGUF = frozenset({
    "context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count",
    "attention.head_count_kv", "attention.layer_norm_rms_epsilon", "rope.freq_base", "vocab_size",
    "rope.dimension_count", "attention.key_length", "attention.value_length", "rope.scaling.type",
    "rope.scaling.factor", "rope.scaling.original_context_length", "rope.scaling.finetuned", "expert_count",
    "expert_used_count",
})


def _check_gguf_values(keys: list[str], get: Callable[[str, Any], Any], arch: str, head_dim: int,
                       where: str, read: frozenset = frozenset(), family: str = "the Llama family") -> None:
    for key in keys:
        if key.startswith(arch + ".") and key[len(arch) + 1:] not in _READ_GGUF | read:
            raise _refuse(where, key, get(key, None), f"is not known to {family} and may change the maths")
    rot = get(f"{arch}.rope.dimension_count", None)
    if rot is not None and int(rot) != head_dim:
        raise _refuse(where, f"{arch}.rope.dimension_count", rot, f"rotates only part of each head ({head_dim} "
                      "dimensions), which is not implemented")
    v_len = get(f"{arch}.attention.value_length", None)
    if v_len is not None and int(v_len) != head_dim:
        raise _refuse(where, f"{arch}.attention.value_length", v_len, "differs from the key length")
    experts = get(f"{arch}.expert_count", 0)
    if experts:
        raise _refuse(where, f"{arch}.expert_count", experts, "makes this a mixture of experts, which is not "
                      "implemented")


def llama3_from_divisors(divisors: Any, head_dim: int, theta: float, where: str) -> dict | None:
    """The ``llama3`` rule that gives llama.cpp's per-frequency RoPE divisors, or :class:`BadModel` if none does.

    The rule keeps high frequencies, divides low ones by ``factor`` and in between blends the two with a weight
    ``t = a * freq - b`` (clipped to [0, 1]); only ``factor``, ``a`` and ``b`` matter, so they are fitted to the
    blended divisors and written as ``high - low = 1``: ``low = b``, ``original = 2 pi a``. Every divisor must be
    reproduced (relative 1e-4), else the file's scaling is something else and is refused.
    """
    d = np.asarray(divisors, dtype=np.float64).reshape(-1)
    freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if d.shape != freq.shape or not np.all(d > 0):
        raise _refuse(where, "rope_freqs.weight", f"{d.size} values", f"does not fit a head of {head_dim} dimensions")
    factor = float(d.max())
    if factor <= 1.0 + 1e-6:
        return None
    t = (1.0 / d - 1.0 / factor) / (1.0 - 1.0 / factor)  # 1: kept, 0: divided by the factor
    blend = (t > 1e-4) & (t < 1 - 1e-4)
    kept, divided = freq[t >= 1 - 1e-4], freq[t <= 1e-4]
    if blend.sum() >= 2:
        a, minus_b = np.polyfit(freq[blend], t[blend], 1)
        b = -minus_b
    elif blend.sum() == 0 and kept.size and divided.size:
        a = 1.0 / (kept.min() - divided.max())
        b = divided.max() * a
    else:
        a = b = float("nan")
    smooth = np.clip(a * freq - b, 0.0, 1.0)
    if not (a > 0 and b > 0) or not np.allclose(1.0 / ((1 - smooth) / factor + smooth), d, rtol=1e-4, atol=0):
        raise _refuse(where, "rope_freqs.weight", "per-frequency divisors", "does not follow Llama 3's RoPE "
                      "scaling rule, the only one implemented for it")
    return {"rope_type": "llama3", "factor": factor, "low_freq_factor": float(b), "high_freq_factor": float(b) + 1.0,
            "original_max_position_embeddings": float(2 * np.pi * a)}


def _gguf_rope_scaling(get: Callable[[str, Any], Any], arch: str, rope_freqs: Any, head_dim: int,
                       where: str) -> dict | None:
    """``rope_scaling`` from GGUF metadata, or from llama.cpp's ``rope_freqs.weight`` (a divisor per frequency)."""
    kind = get(f"{arch}.rope.scaling.type", None)
    if rope_freqs is not None:
        if kind not in (None, "none"):
            raise _refuse(where, f"{arch}.rope.scaling.type", kind, "comes with rope_freqs.weight too")
        return llama3_from_divisors(rope_freqs, head_dim, float(get(f"{arch}.rope.freq_base", 10000.0)), where)
    if kind in (None, "none"):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(get(f"{arch}.rope.scaling.factor", None))}
    raise _refuse(where, f"{arch}.rope.scaling.type", kind, "is a RoPE scaling that is not implemented "
                  "(implemented: linear, llama3)")


def from_gguf(get: Callable[[str, Any], Any], arch: str, model_type: str, tensor_names: set[str],
              vocab_rows: int, name: str, *, keys: list[str] = (), rope_freqs: Any = None,
              where: str = "GGUF", read: frozenset = frozenset(), family: str = "the Llama family",
              config_tensors: dict | None = None) -> dict[str, Any]:
    """``checkpoint.config`` from GGUF metadata (``get(key, default)``; keys are prefixed by the file's ``arch``).

    ``tensor_names``: the HF names the file's tensors map to; ``vocab_rows``: rows of the token embedding (the
    vocabulary size when the metadata lacks it); ``keys``: every metadata key of the file (checked);
    ``rope_freqs``: the values of ``rope_freqs.weight`` when the file has it; ``read``: keys (after ``<arch>.``)
    the calling family reads itself; ``config_tensors``: the values of every tensor the family's loader names in
    ``GGUF_CONFIG_TENSORS`` (read by the calling family).
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
    _check_gguf_values(list(keys), get, a, head_dim, where, read | {"attention.sliding_window"}, family)
    window = int(get(f"{a}.attention.sliding_window", 0) or 0)
    if "attention.sliding_window" not in read and window and window < ctx:  # Mistral-style: every layer windowed
        config["sliding_window"] = window
        config["sliding_layers"] = list(range(config["num_hidden_layers"]))
    scaling = _gguf_rope_scaling(get, a, rope_freqs, head_dim, where)
    if scaling:
        config["rope_scaling"] = scaling
    return config
