"""Tiny checkpoints of each model family, written by independent writers, and the weights the reference runs.

Each :class:`Case` writes its source once under the cache's ``test-sources`` (same bytes every run, so the
model folders built from it are found by content hash) and says which quantization the build uses and which
float32 weights the numpy reference must run to judge the build exactly:

    case = CASES["qwen3-hf"]
    source, weights, config = case.write()
    folder = build_model_folder(source, quantization=case.quantization, device="webgpu", schedule="fallback")
    want = reference_logits(weights, config)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tiny import TinyLlama


def _q4_weights(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What ``q4f32_1`` computes with: every matrix through the 4-bit group quantizer and back."""
    from webllm_widget.compile.quant.packing import dequantize, quantize_q4

    return {k: (dequantize("q4", quantize_q4(v)) if v.ndim == 2 else v) for k, v in weights.items()}


def _sources() -> Path:
    from webllm_widget.cache import cache_dir

    return cache_dir() / "test-sources"


def _qwen2_5_hf() -> tuple[Path, dict, dict]:
    tiny = TinyLlama.make(seed=9, arch="qwen2", bias=True, tie=True)
    tiny.config.update(use_sliding_window=False, sliding_window=4096, max_window_layers=21)  # Qwen2.5's keys
    return tiny.write_hf(_sources() / "tiny-qwen2.5-seed9"), _q4_weights(tiny.weights), tiny.config


#: Texts the tiny Qwen2.5 with tools holds as single added tokens, in the ids its vocabulary pads (so the model's shape,
#: hence its compiled libraries, stay those of the "qwen2.5-hf" case): Qwen2.5's own tool tags (added tokens in its
#: tokenizer too), the two fixed texts its template writes around the tools and the keys of a tool's JSON, so that a
#: prompt with tools fits the tiny model's 256-token context.
QWEN2_5_TOOL_TOKENS = [
    "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function "
    "signatures within <tools></tools> XML tags:\n<tools>",
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}"
    "\n</tool_call>",
    '{"type": "function", "function": {"name": ', ', "parameters": {"type": "object", "properties": {',
    ', "required": [', '{"enum": [',
]


def qwen2_5_tools_hf() -> tuple[Path, dict, dict]:
    """The "qwen2.5-hf" case's model (same weights and shape) with Qwen2.5-Instruct's own chat template, which calls
    tools, in ``tokenizer_config.json``, and :data:`QWEN2_5_TOOL_TOKENS` added to its tokenizer. Returns (source,
    float32 weights the q4f32_1 build holds, config)."""
    import json

    from chat_templates import QWEN2_5_TOOLS
    from webllm_widget.cache import atomic_write_bytes

    source, weights, config = _qwen2_5_hf()
    folder = source.with_name("tiny-qwen2.5-tools-seed9")
    folder.mkdir(parents=True, exist_ok=True)
    doc = json.loads((source / "tokenizer.json").read_text())
    n = len(doc["model"]["vocab"])
    assert n + len(QWEN2_5_TOOL_TOKENS) <= config["vocab_size"], "the padding ids must hold the added tokens"
    for i, t in enumerate(QWEN2_5_TOOL_TOKENS):
        doc["added_tokens"].append({"id": n + i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                                    "normalized": False, "special": False})
        doc["model"]["vocab"][t] = n + i
    files = {"config.json": (source / "config.json").read_text(), "tokenizer.json": json.dumps(doc),
             "tokenizer_config.json": json.dumps({"chat_template": QWEN2_5_TOOLS, "eos_token": "<|im_end|>"})}
    # same bytes: the build is cached; a file written appears whole (another process may be reading it)
    for name, text in files.items():
        if not (folder / name).exists() or (folder / name).read_text() != text:
            atomic_write_bytes(folder / name, text.encode())
    st = folder / "model.safetensors"
    if not st.exists() or st.stat().st_size != (source / "model.safetensors").stat().st_size:
        atomic_write_bytes(st, (source / "model.safetensors").read_bytes())
    return folder, weights, config


def _qwen3_hf() -> tuple[Path, dict, dict]:
    tiny = TinyLlama.make(seed=5, arch="qwen3", tie=False, head_dim=32)
    return tiny.write_hf(_sources() / "tiny-qwen3-seed5"), _q4_weights(tiny.weights), tiny.config


#: Sizes of the GGUF cases' tiny models, one for every family: rows of 256 values, so llama.cpp's K-quants apply,
#: and the same matrix shapes everywhere, so the browser compiles each shape's kernels once for all families
#: (SwiftShader's shader compilation is most of a case's time in the page)
GGUF_SHAPE = dict(hidden=256, heads=4, kv_heads=2, ffn=512)


def ggml_built_weights(checkpoint, exact: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the ``ggml`` mode computes with: the file's exact values, except the matrices it re-quantizes to
    ``q8_0`` (more than 4 bits a weight), which go through the 8-bit group quantizer and back. ``exact``: by the
    checkpoint's tensor names (Phi-3's fused), the result by the reference's (split)."""
    from tiny import split_fused

    from webllm_widget.compile.arch import registry
    from webllm_widget.compile.quant.ggml import ggml_quantization
    from webllm_widget.compile.quant.packing import dequantize, quantize_q8

    cfg = registry.config_from_dict(checkpoint.config)
    formats = dict(ggml_quantization(checkpoint, cfg).formats)
    out = dict(exact)
    for path, names, _ in registry.family_of(cfg).loader.param_sources(cfg):
        if formats.get(path) == "q8_0" and any(checkpoint.get(n).ggml_type != "Q8_0" for n in names):
            for n in names:
                out[n] = dequantize("q8_0", quantize_q8(exact[n]))
    return split_fused(out, checkpoint.config) if checkpoint.config["architecture"] == "phi3" else out


def hf_config(tiny: TinyLlama) -> dict:
    """``checkpoint.config`` of the tiny model's Hugging Face folder (what the reference of an HF case runs)."""
    from webllm_widget.compile.arch import registry

    fam, model_type = registry.family_for_hf(tiny.config["architectures"][0], "tiny")
    return fam.config_module.from_hf(tiny.config, model_type, set(tiny.file_tensors()), "tiny")


def phi3_tiny(seed: int = 7, longrope: bool = True, **shape) -> TinyLlama:
    """A tiny Phi-3.5-like model: fused q/k/v and gate/up in its files, LongRoPE with an original context of 64 (of
    256) and random short/long factors, Phi-3's extra config keys. ``shape``: :meth:`TinyLlama.make`'s sizes."""
    tiny = TinyLlama.make(seed=seed, arch="phi3", tie=False, **shape)
    hd = tiny.config["head_dim"]
    rng = np.random.default_rng(seed)
    tiny.config.update(original_max_position_embeddings=64, sliding_window=255, pad_token_id=0,
                       resid_pdrop=0.0, embd_pdrop=0.0, auto_map={"AutoConfig": "configuration_phi3.Phi3Config"})
    if longrope:
        tiny.config["rope_scaling"] = {"type": "longrope", "short_factor": list(1 + 2 * rng.random(hd // 2)),
                                       "long_factor": list(4 + rng.random(hd // 2))}
    return tiny


def _phi3_hf() -> tuple[Path, dict, dict]:
    from webllm_widget.compile.checkpoint import open_checkpoint

    tiny = phi3_tiny()
    path = tiny.write_hf(_sources() / "tiny-phi3-longrope-seed7")
    return path, _q4_weights(tiny.weights), open_checkpoint(path).config


def gemma3_tiny(seed: int = 8, query_pre_attn_scalar: float = 24, layers: int = 3, head_dim: int = 32,
                **shape) -> TinyLlama:
    """A tiny Gemma 3 text model: 3 layers (sliding, global, sliding), head_dim 32, tied head, norms stored as
    offsets from one, linear RoPE scaling on the global layer, a window longer than the tests' sequences."""
    tiny = TinyLlama.make(seed=seed, layers=layers, head_dim=head_dim, rope_theta=1e6,
                          rope_scaling={"rope_type": "linear", "factor": 4.0}, **shape)
    rng = np.random.default_rng(seed)
    tiny.config.update(architectures=["Gemma3ForCausalLM"], model_type="gemma3_text",
                       query_pre_attn_scalar=query_pre_attn_scalar,
                       rope_local_base_freq=10000.0, sliding_window=128, sliding_window_pattern=2,
                       hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, attn_logit_softcapping=None,
                       final_logit_softcapping=None, cache_implementation="hybrid", attention_bias=False)
    hd, hidden = head_dim, tiny.config["hidden_size"]
    for name in list(tiny.weights):
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            tiny.weights[name] = (0.1 * rng.standard_normal(hidden)).astype(np.float32)
    for L in range(layers):
        p = f"model.layers.{L}."
        for n, size in (("self_attn.q_norm", hd), ("self_attn.k_norm", hd), ("pre_feedforward_layernorm", hidden),
                        ("post_feedforward_layernorm", hidden)):
            tiny.weights[p + n + ".weight"] = (0.1 * rng.standard_normal(size)).astype(np.float32)
    return tiny


def _gemma3_hf() -> tuple[Path, dict, dict]:
    from webllm_widget.compile.checkpoint import open_checkpoint

    tiny = gemma3_tiny()
    path = tiny.write_hf(_sources() / "tiny-gemma3-seed8")
    return path, _q4_weights(tiny.weights), open_checkpoint(path).config


def gemma2_tiny(seed: int = 11, window: int = 6, attn_cap: float | None = 4.0,
                final_cap: float | None = 15.0, layers: int = 3, head_dim: int = 32,
                query_pre_attn_scalar: float = 16, **shape) -> TinyLlama:
    """A tiny Gemma 2: 3 layers (windowed, global, windowed) with a window of 6 in the tests' 23 positions, head_dim
    32, tied head, norms stored as offsets from one, ``query_pre_attn_scalar`` apart from head_dim, and soft caps
    small enough that random weights' scores and logits reach them (the real model's are 50 and 30)."""
    tiny = TinyLlama.make(seed=seed, layers=layers, head_dim=head_dim, **shape)
    rng = np.random.default_rng(seed)
    tiny.config.update(architectures=["Gemma2ForCausalLM"], model_type="gemma2",
                       query_pre_attn_scalar=query_pre_attn_scalar,
                       sliding_window=window, hidden_activation="gelu_pytorch_tanh", hidden_act="gelu_pytorch_tanh",
                       rms_norm_eps=1e-6, attn_logit_softcapping=attn_cap, final_logit_softcapping=final_cap,
                       cache_implementation="hybrid", attention_bias=False, pad_token_id=0)
    hidden = tiny.config["hidden_size"]
    for name in list(tiny.weights):
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            tiny.weights[name] = (0.1 * rng.standard_normal(hidden)).astype(np.float32)
    for L in range(layers):
        for n in ("pre_feedforward_layernorm", "post_feedforward_layernorm"):
            tiny.weights[f"model.layers.{L}.{n}.weight"] = (0.1 * rng.standard_normal(hidden)).astype(np.float32)
    return tiny


def _gemma2_hf() -> tuple[Path, dict, dict]:
    from webllm_widget.compile.checkpoint import open_checkpoint

    tiny = gemma2_tiny()
    path = tiny.write_hf(_sources() / "tiny-gemma2-window6-seed11")
    return path, _q4_weights(tiny.weights), open_checkpoint(path).config


def mistral_tiny(seed: int = 10, window: int = 7) -> TinyLlama:
    """A tiny Mistral: the Llama layout with a ``sliding_window`` of 7 on both layers, so that the tests' 23 positions
    reach past it (two windowed layers see 13 positions back) and prefill goes in chunks of at most the window."""
    tiny = TinyLlama.make(seed=seed, tie=False)
    tiny.config.update(architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=window)
    return tiny


def _mistral_hf() -> tuple[Path, dict, dict]:
    from webllm_widget.compile.checkpoint import open_checkpoint

    tiny = mistral_tiny()
    path = tiny.write_hf(_sources() / "tiny-mistral-window7-seed10")
    return path, _q4_weights(tiny.weights), open_checkpoint(path).config


#: The tiny model each family's GGUF cases are written from: the HF cases' models at :data:`GGUF_SHAPE` (two layers,
#: head_dim 64; Gemma 3: one sliding and one global layer, attention scale head_dim ** -0.5, which is what a
#: ``gemma3`` GGUF implies; Gemma 2 likewise, with its caps and a window of 6 on layer 0). Qwen3's head_dim != hidden
#: / heads is the HF case's and the unit tests'.
GGUF_TINY: dict[str, Callable[[], TinyLlama]] = {
    "llama": lambda: TinyLlama.make(seed=6, tie=False, **GGUF_SHAPE),
    "qwen2.5": lambda: _qwen2_5_keys(TinyLlama.make(seed=9, arch="qwen2", bias=True, tie=True, **GGUF_SHAPE)),
    "qwen3": lambda: TinyLlama.make(seed=5, arch="qwen3", tie=False, **GGUF_SHAPE),
    "phi3": lambda: phi3_tiny(**GGUF_SHAPE),
    "gemma3": lambda: gemma3_tiny(query_pre_attn_scalar=64, layers=2, head_dim=64, **GGUF_SHAPE),
    "gemma2": lambda: gemma2_tiny(query_pre_attn_scalar=64, layers=2, head_dim=64, **GGUF_SHAPE),
}


def _qwen2_5_keys(tiny: TinyLlama) -> TinyLlama:
    tiny.config.update(use_sliding_window=False, sliding_window=4096, max_window_layers=21)
    return tiny


_WRITTEN: dict[tuple[str, str], tuple[tuple[Path, dict, dict], dict]] = {}


@dataclass(frozen=True)
class GGUFSource:
    """A family's tiny model written as a GGUF of ``ftype`` by PyPI ``gguf``'s writer (:meth:`TinyLlama.write_gguf`)."""

    family: str
    ftype: str

    def write(self) -> tuple[Path, dict, dict]:
        """(GGUF path, weights the ``ggml`` build holds, reference config); also sets :attr:`exact`. Written once
        per process (the same bytes every time)."""
        from webllm_widget.compile.checkpoint import open_checkpoint

        done = _WRITTEN.get((self.family, self.ftype))
        if done is None or not done[0][0].is_file():
            tiny = GGUF_TINY[self.family]()
            path = tiny.write_gguf(_sources() / f"tiny-{self.family}-{self.ftype.lower()}.gguf", ftype=self.ftype)
            built = ggml_built_weights(open_checkpoint(path), tiny.gguf_file_weights)
            done = _WRITTEN[(self.family, self.ftype)] = ((path, built, hf_config(tiny)), tiny.gguf_weights)
        object.__setattr__(self, "_exact", done[1])
        return done[0]

    @property
    def exact(self) -> dict[str, np.ndarray]:
        """The file's weights exactly (``gguf``'s dequantizer), after :meth:`write`."""
        return self._exact


@dataclass(frozen=True)
class Case:
    id: str
    quantization: str
    make: Callable[[], tuple[Path, dict, dict]]
    #: for a GGUF case, its source (``exact`` holds the file's weights once written)
    gguf: GGUFSource | None = None

    def write(self) -> tuple[Path, dict, dict]:
        """(source path, float32 weights the build holds exactly, config for the reference)."""
        return self.make()


CASES = {c.id: c for c in [
    Case("qwen2.5-hf", "q4f32_1", _qwen2_5_hf),  # q/k/v bias, tied head, Qwen2.5's unused sliding-window keys
    Case("qwen3-hf", "q4f32_1", _qwen3_hf),  # untied head, head_dim 32 != hidden / heads, per-head q/k norm
    Case("phi3-hf", "q4f32_1", _phi3_hf),
    Case("gemma3-hf", "q4f32_1", _gemma3_hf),  # two RoPE bases, (1 + w) norms, post-norms, GeGLU-tanh, q/k norms
    Case("mistral-hf", "q4f32_1", _mistral_hf),  # sliding window 7 on every layer, shorter than the 23 positions
    Case("gemma2-hf", "q4f32_1", _gemma2_hf),  # attention and final soft caps, windows of 6 on layers 0 and 2
]}

#: GGUF cases: every family in llama.cpp's Q4_K_M mix and in Q8_0, compiled in the ``ggml`` mode (Q4_K kept exactly
#: as ``q4_1``, Q8_0 as ``q8_0``; Q5_0/Q5_1/Q5_K/Q6_K re-quantized to ``q8_0``)
GGUF_CASES = {f"{fam}-gguf-{ft.lower()}": Case(f"{fam}-gguf-{ft.lower()}", "ggml", src.write, src)
              for fam in GGUF_TINY for ft in ("Q4_K_M", "Q8_0") for src in [GGUFSource(fam, ft)]}
ALL_CASES = {**CASES, **GGUF_CASES}


def build(case: str, device: str):
    """``case``'s model folder for ``device`` as the family logit test runs it: WebGPU with the software adapter's
    schedule, the page CPU with its SIMD128 library only (the relaxed-SIMD build beside it is left out: the
    tests/browser/test_cpu_*.py check both builds). Returns (folder, float32 weights the build holds, config).
    Cached by content hash; also what the background prebuild calls (tests/helpers/prebuild.py)."""
    from webllm_widget.compile.pipeline import build_model_folder

    c = ALL_CASES[case]
    source, weights, config = c.write()
    folder = build_model_folder(source, quantization=c.quantization, device=device,
                                schedule="fallback" if device == "webgpu" else "auto", progress=False,
                                relaxed_simd=False)
    return folder, weights, config
