"""Tiny random-weight Llama checkpoints for fast tests: an HF folder and a GGUF file of the same model.

    m = TinyLlama.make(seed=0)                 # config + float32 weights (HF names, [out, in])
    folder = m.write_hf(tmp_path / "hf")       # config.json + model.safetensors + tokenizer.json
    path = m.write_gguf(tmp_path / "t.gguf")   # llama.cpp layout: q/k rows permuted, Q8_0/Q4_1/F32
    m.gguf_weights                             # what the GGUF holds after its quantization, as float32

The GGUF is written with PyPI ``gguf``'s own writer and quantizer (not the project's code), and the
HF safetensors with a writer here, so the project's readers are checked against independent files.
The tokenizer is a small byte-level BPE: 3 ChatML special tokens, the 256 byte symbols, a few merges.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from webllm_widget.cache import atomic_write_bytes

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a tiny test model<|im_end|>\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
_MERGE_WORDS = ["the", "and", "in", "is", "Paris", "capital", "France", "hello", "world", "def", "return"]


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes 0..255 (GPT-2's convention)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def tiny_vocab() -> tuple[list[str], list[str]]:
    """Tokens (specials, bytes, merged pieces) and merges ("a b") of the tiny tokenizer."""
    sym = byte_symbols()
    tokens = SPECIALS + sym
    merges: list[str] = []
    have = set(tokens)
    for word in _MERGE_WORDS:
        for piece in (word, " " + word):
            enc = "".join(sym[b] for b in piece.encode())
            cur = enc[0]
            for ch in enc[1:]:  # left-to-right merges build each word
                merged = cur + ch
                if merged not in have:
                    merges.append(f"{cur} {ch}")
                    tokens.append(merged)
                    have.add(merged)
                cur = merged
    return tokens, merges


def tiny_tokenizer_json() -> dict:
    tokens, merges = tiny_vocab()
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, t in enumerate(SPECIALS)],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges},
    }


@dataclass
class TinyLlama:
    config: dict
    weights: dict[str, np.ndarray]
    gguf_weights: dict[str, np.ndarray] = field(default_factory=dict)
    gguf_file_weights: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def make(cls, *, seed: int = 0, layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
             ffn: int = 128, tie: bool = True, bias: bool = False, arch: str = "llama",
             rope_theta: float = 10000.0, context: int = 256, rope_scaling: dict | None = None,
             head_dim: int | None = None) -> "TinyLlama":
        """``arch``: ``llama``, ``qwen2``, ``qwen3`` (adds per-head q/k RMSNorm weights) or ``phi3`` (fused q/k/v and
        gate/up in the files); ``head_dim`` defaults to ``hidden // heads``. ``weights`` keep q/k/v and gate/up
        apart (the reference's names) for every architecture."""
        tokens, _ = tiny_vocab()
        vocab = (len(tokens) + 31) // 32 * 32  # pad like real models do; pad ids are never produced
        hd = head_dim or hidden // heads
        rng = np.random.default_rng(seed)
        cfg = {
            "architectures": [{"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                               "phi3": "Phi3ForCausalLM"}.get(arch, "LlamaForCausalLM")],
            "model_type": arch, "hidden_size": hidden, "intermediate_size": ffn,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads, "num_hidden_layers": layers,
            "rms_norm_eps": 1e-5, "rope_theta": rope_theta, "vocab_size": vocab,
            "tie_word_embeddings": tie, "max_position_embeddings": context, "attention_bias": bias,
            "bos_token_id": 1, "eos_token_id": 2, "head_dim": hd,
        }
        if rope_scaling:
            cfg["rope_scaling"] = dict(rope_scaling)

        def mat(o, i, scale=1.0):
            return (rng.standard_normal((o, i)) * scale / np.sqrt(i)).astype(np.float32)

        w = {"model.embed_tokens.weight": (rng.standard_normal((vocab, hidden)) * 0.5).astype(np.float32)}
        for L in range(layers):
            p = f"model.layers.{L}."
            w[p + "input_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
            w[p + "post_attention_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
            w[p + "self_attn.q_proj.weight"] = mat(heads * hd, hidden, 2.0)
            w[p + "self_attn.k_proj.weight"] = mat(kv_heads * hd, hidden, 2.0)
            w[p + "self_attn.v_proj.weight"] = mat(kv_heads * hd, hidden)
            w[p + "self_attn.o_proj.weight"] = mat(hidden, heads * hd)
            w[p + "mlp.gate_proj.weight"] = mat(ffn, hidden)
            w[p + "mlp.up_proj.weight"] = mat(ffn, hidden)
            w[p + "mlp.down_proj.weight"] = mat(hidden, ffn)
            if arch == "qwen3":
                w[p + "self_attn.q_norm.weight"] = (1 + 0.2 * rng.standard_normal(hd)).astype(np.float32)
                w[p + "self_attn.k_norm.weight"] = (1 + 0.2 * rng.standard_normal(hd)).astype(np.float32)
            if bias:
                for n, size in (("q", heads * hd), ("k", kv_heads * hd), ("v", kv_heads * hd)):
                    w[p + f"self_attn.{n}_proj.bias"] = (0.1 * rng.standard_normal(size)).astype(np.float32)
        w["model.norm.weight"] = (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
        if not tie:
            w["lm_head.weight"] = mat(vocab, hidden)
        return cls(cfg, w)

    # ------------------------------------------------------------------ HF folder
    def write_hf(self, folder: Path, *, dtype: str = "F32") -> Path:
        """config.json + model.safetensors (F32, F16 or BF16) + tokenizer.json."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        # each file appears whole (written aside, then renamed): another process (the background prebuild,
        # tests/helpers/prebuild.py) may be reading the same bytes of an earlier write
        atomic_write_bytes(folder / "config.json", json.dumps(self.config, indent=1).encode())
        atomic_write_bytes(folder / "tokenizer.json", json.dumps(tiny_tokenizer_json()).encode())
        write_safetensors(folder / "model.safetensors", self.file_tensors(), dtype)
        return folder

    def file_tensors(self) -> dict[str, np.ndarray]:
        """The tensors as the architecture's HF checkpoints name them (Phi-3: q/k/v and gate/up fused)."""
        if self.config["model_type"] != "phi3":
            return self.weights
        out = {}
        for name, w in self.weights.items():
            if name.endswith(("self_attn.k_proj.weight", "self_attn.v_proj.weight", "mlp.up_proj.weight")):
                continue
            if name.endswith("self_attn.q_proj.weight"):
                p = name[: -len("q_proj.weight")]
                out[p + "qkv_proj.weight"] = np.concatenate([w, self.weights[p + "k_proj.weight"],
                                                             self.weights[p + "v_proj.weight"]])
            elif name.endswith("mlp.gate_proj.weight"):
                p = name[: -len("gate_proj.weight")]
                out[p + "gate_up_proj.weight"] = np.concatenate([w, self.weights[p + "up_proj.weight"]])
            else:
                out[name] = w
        return out

    # ------------------------------------------------------------------ GGUF
    def write_gguf(self, path: Path, *, matrix_type: str = "Q4_1", embed_type: str = "Q8_0",
                   arch: str | None = None, block_types: dict[str, str] | None = None,
                   ftype: str | None = None) -> Path:
        """A GGUF in llama.cpp's layout; fills ``gguf_weights`` with what the file holds (as float32, HF names and
        conventions: q/k rows un-permuted, Gemma's norms as offsets from one, Phi-3's fused tensors split).

        Tensor names come from PyPI ``gguf``'s own name map (``gguf.get_tensor_name_map``), metadata as llama.cpp's
        converter writes it for the architecture. ``ftype`` (``"Q4_K_M"`` or ``"Q8_0"``) picks every tensor's block
        type as ``llama-quantize`` does (:func:`llama_cpp_type`); otherwise ``block_types`` (a block type per HF
        tensor name) over ``matrix_type``/``embed_type``. K-quant blocks are written by ``kquants.py`` (PyPI
        ``gguf`` cannot quantize them), the others by ``gguf.quants.quantize``; every tensor's weights are read
        back with ``gguf``'s dequantizer.
        """
        import gguf

        c = self.config
        family = c["model_type"]
        arch = arch or GGUF_ARCH.get(family, family)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # written aside and renamed at the end, so a reader of an earlier write never sees a partial file
        part = path.with_name(f".{path.name}.{os.getpid()}.part")
        wr = gguf.GGUFWriter(str(part), arch)
        wr.add_name("tiny-test-llama")
        wr.add_block_count(c["num_hidden_layers"])
        wr.add_context_length(c["max_position_embeddings"])
        wr.add_embedding_length(c["hidden_size"])
        wr.add_feed_forward_length(c["intermediate_size"])
        wr.add_head_count(c["num_attention_heads"])
        wr.add_head_count_kv(c["num_key_value_heads"])
        wr.add_rope_freq_base(c["rope_theta"])
        wr.add_layer_norm_rms_eps(c["rms_norm_eps"])
        if arch in ("llama", "qwen2", "qwen3", "phi3", "gpt2"):
            wr.add_vocab_size(c["vocab_size"])
            wr.add_rope_dimension_count(c["head_dim"])
        if c["head_dim"] != c["hidden_size"] // c["num_attention_heads"] or arch in ("gemma2", "gemma3"):
            wr.add_key_length(c["head_dim"])
            wr.add_value_length(c["head_dim"])
        if ftype:
            wr.add_file_type({"Q4_K_M": gguf.LlamaFileType.MOSTLY_Q4_K_M, "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[ftype])
        scaling = c.get("rope_scaling") or {}
        if scaling.get("rope_type") == "linear":
            wr.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            wr.add_rope_scaling_factor(scaling["factor"])
        elif scaling.get("rope_type") == "llama3":
            # llama.cpp stores Llama 3.1's scaling as a divisor per frequency (tensor rope_freqs.weight)
            wr.add_tensor("rope_freqs.weight", llama3_freq_divisors(c["head_dim"], c["rope_theta"], scaling))
        if arch == "phi3":  # Phi3MiniModel: the window (0 for none), LongRoPE's original context, factor and tensors
            wr.add_sliding_window(int(c.get("sliding_window") or 0))
            wr.add_rope_scaling_orig_ctx_len(int(c["original_max_position_embeddings"]))
            if scaling.get("type") == "longrope" or scaling.get("rope_type") == "longrope":
                s = c["max_position_embeddings"] / c["original_max_position_embeddings"]
                wr.add_rope_scaling_attn_factors(
                    float(np.sqrt(1 + np.log(s) / np.log(c["original_max_position_embeddings"]))) if s > 1 else 1.0)
                wr.add_tensor("rope_factors_long.weight", np.asarray(scaling["long_factor"], dtype=np.float32))
                wr.add_tensor("rope_factors_short.weight", np.asarray(scaling["short_factor"], dtype=np.float32))
        if arch == "gemma2":  # Gemma2Model: both caps and the even layers' window
            wr.add_attn_logit_softcapping(float(c["attn_logit_softcapping"] or 0.0))
            wr.add_final_logit_softcapping(float(c["final_logit_softcapping"] or 0.0))
            wr.add_sliding_window(int(c["sliding_window"]))
        if arch == "gemma3":  # Gemma3Model; llama.cpp assumes every 6th layer global: a tiny model says its own
            wr.add_sliding_window(int(c["sliding_window"]))
            if int(c.get("sliding_window_pattern", 6)) != 6:
                wr.add_sliding_window_pattern([bool((i + 1) % c["sliding_window_pattern"])
                                               for i in range(c["num_hidden_layers"])])
            if c.get("rope_local_base_freq", 10000.0) != 10000.0:
                wr.add_rope_freq_base_swa(float(c["rope_local_base_freq"]))
        tokens, merges = tiny_vocab()
        tokens = tokens + [f"<pad_{i}>" for i in range(c["vocab_size"] - len(tokens))]
        types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
        wr.add_tokenizer_model("gpt2")
        wr.add_tokenizer_pre("gpt2")
        wr.add_token_list(tokens)
        wr.add_token_types(types)
        wr.add_token_merges(merges)
        wr.add_bos_token_id(1)
        wr.add_eos_token_id(2)
        wr.add_chat_template(CHATML)

        arch_enum = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}.get(GGUF_ARCH.get(family, family))
        names = gguf.get_tensor_name_map(arch_enum or gguf.MODEL_ARCH.LLAMA, c["num_hidden_layers"])
        files = self.file_tensors()
        gguf_names = {hf: names.get_name(hf, try_suffixes=(".weight", ".bias")) for hf in files}
        if ftype:
            block_types = llama_cpp_types(ftype, {gguf_names[hf]: (hf, w.shape) for hf, w in files.items()},
                                          c["num_hidden_layers"])
        self.gguf_weights = {}
        for hf, w in files.items():
            name = gguf_names[hf]
            stored = w
            if arch == "llama" and (".q_proj." in hf or ".k_proj." in hf):
                n = c["num_attention_heads"] if ".q_proj." in hf else c["num_key_value_heads"]
                # llama.cpp's converter: interleave the two halves of each head's rows
                stored = w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
            shift = 1.0 if arch in ("gemma2", "gemma3") and hf.endswith("norm.weight") else 0.0  # Gemma: 1 + w
            if w.ndim == 2 and hf in (block_types or {}):
                qtype = gguf.GGMLQuantizationType[block_types[hf]]
            elif w.ndim == 1:
                qtype = gguf.GGMLQuantizationType.F32
            elif hf == "model.embed_tokens.weight" or hf == "lm_head.weight":
                qtype = gguf.GGMLQuantizationType[embed_type]
            else:
                qtype = gguf.GGMLQuantizationType[matrix_type]
            if qtype == gguf.GGMLQuantizationType.F32:
                held = np.ascontiguousarray(stored + np.float32(shift), dtype=np.float32)
                wr.add_tensor(name, held)
                self.gguf_weights[hf] = held - np.float32(shift) if shift else w.astype(np.float32)
            elif qtype == gguf.GGMLQuantizationType.F16:
                wr.add_tensor(name, np.ascontiguousarray(stored, dtype=np.float16))
                self.gguf_weights[hf] = w.astype(np.float16).astype(np.float32)
            else:
                if qtype.name.endswith("_K"):
                    from kquants import quantize_k

                    def quantize(a, qtype=qtype):
                        return quantize_k(a, qtype.name)
                else:
                    def quantize(a, qtype=qtype):
                        return gguf.quants.quantize(a, qtype)
                q = quantize(np.ascontiguousarray(stored))
                wr.add_tensor(name, q, raw_dtype=qtype)
                self.gguf_weights[hf] = gguf.quants.dequantize(
                    quantize(np.ascontiguousarray(w)), qtype).reshape(w.shape).astype(np.float32)
        self.gguf_file_weights = dict(self.gguf_weights)  # as the file names them (Phi-3: fused)
        if family == "phi3":
            self.gguf_weights = split_fused(self.gguf_weights, c)
        wr.write_header_to_file()
        wr.write_kv_data_to_file()
        wr.write_tensors_to_file()
        wr.close()
        os.replace(part, path)
        return path


#: HF ``model_type`` -> llama.cpp's architecture name
GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "phi3": "phi3",
             "gemma2": "gemma2", "gemma3_text": "gemma3"}


def _more_bits(i: int, n: int) -> bool:
    """llama.cpp's ``use_more_bits``: the first and last eighth of the layers, and every third one between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def llama_cpp_types(ftype: str, tensors: dict[str, tuple[str, tuple[int, ...]]], layers: int) -> dict[str, str]:
    """The block type ``llama-quantize`` gives each 2-D tensor of a small dense model for ``ftype``, by HF name.

    ``tensors``: GGUF name -> (HF name, shape). ``Q8_0``: every matrix Q8_0. ``Q4_K_M``: Q4_K, except Q6_K for the
    LM head (``output``, or ``token_embd`` when the head is tied) and for ``attn_v`` and ``ffn_down`` of the layers
    :func:`_more_bits` picks, Q5_K for a fused ``attn_qkv``; a row whose length is not a multiple of 256 (the
    K-quants' block) falls back to Q5_0 (for Q4_K), Q5_1 (Q5_K) or Q8_0 (Q6_K), as llama.cpp does.
    """
    out = {}
    tied = "output.weight" not in tensors
    for name, (hf, shape) in tensors.items():
        if len(shape) != 2:
            continue
        if ftype == "Q8_0":
            out[hf] = "Q8_0"
            continue
        layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
        kind = "Q4_K"
        if name == "output.weight" or (tied and name == "token_embd.weight"):
            kind = "Q6_K"
        elif name.endswith(("attn_v.weight", "ffn_down.weight")) and _more_bits(layer, layers):
            kind = "Q6_K"
        elif name.endswith("attn_qkv.weight"):
            kind = "Q5_K"
        if shape[1] % 256:
            kind = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}[kind]
        out[hf] = kind
    return out


def split_fused(tensors: dict[str, np.ndarray], c: dict) -> dict[str, np.ndarray]:
    """Fused ``qkv_proj`` / ``gate_up_proj`` tensors split back into the reference's q/k/v and gate/up."""
    q_rows, kv_rows = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    out = {}
    for name, w in tensors.items():
        if name.endswith("self_attn.qkv_proj.weight"):
            p = name[: -len("qkv_proj.weight")]
            out[p + "q_proj.weight"], out[p + "k_proj.weight"], out[p + "v_proj.weight"] = np.split(
                w, [q_rows, q_rows + kv_rows])
        elif name.endswith("mlp.gate_up_proj.weight"):
            p = name[: -len("gate_up_proj.weight")]
            out[p + "gate_proj.weight"], out[p + "up_proj.weight"] = np.split(w, 2)
        else:
            out[name] = w
    return out


def llama3_freq_divisors(head_dim: int, theta: float, scaling: dict) -> np.ndarray:
    """Llama 3.1's RoPE scaling as one divisor per frequency: 1 (short wavelengths), the factor (long ones),
    and in between the divisor that blends the two linearly in ``original context / wavelength``."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    out = []
    for i in range(0, head_dim, 2):
        wavelength = 2 * np.pi * theta ** (i / head_dim)
        if wavelength < old / high:
            out.append(1.0)
        elif wavelength > old / low:
            out.append(factor)
        else:
            t = (old / wavelength - low) / (high - low)
            out.append(1.0 / ((1 - t) / factor + t))
    return np.array(out, dtype=np.float32)


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str = "F32") -> None:
    """A minimal safetensors writer (8-byte header length, JSON header, raw little-endian data)."""
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        if dtype == "F32":
            b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        elif dtype == "F16":
            b = np.ascontiguousarray(a, dtype="<f2").tobytes()
        elif dtype == "BF16":
            b = (np.ascontiguousarray(a, dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes()
        else:
            raise ValueError(dtype)
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    atomic_write_bytes(Path(path), b"".join([struct.pack("<Q", len(h)), h, *blobs]))  # appears whole


def copy_gguf_with(src: Path, dst: Path, overrides: dict, extra: dict | None = None) -> Path:
    """Copy a GGUF file, replacing metadata values (``{"tokenizer.ggml.model": "llama"}``) and adding the
    ``extra`` ones (``{key: (value, gguf.GGUFValueType.FLOAT32)}``), with gguf's writer."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(str(dst), arch)
    for key, fld in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        val = overrides.get(key, fld.contents())
        if fld.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, val, fld.types[0], sub_type=fld.types[-1])
        else:
            w.add_key_value(key, val, fld.types[0])
    for key, (val, vtype) in (extra or {}).items():
        w.add_key_value(key, val, vtype)
    for t in reader.tensors:
        w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(dst)


#: Tiny Llamas that tests build as q4f32_1 WebGPU model folders: name -> TinyLlama.make arguments
TINY_FOLDERS = {
    "seed0": dict(seed=0),  # the suite's tiny_folder (tests/conftest.py) and its other builds
    # the chat notebook's three turns, the typed one and their template tokens outgrow the default 256-token context
    "seed0-ctx1024": dict(seed=0, context=1024),
}


def tiny_folder(name: str, schedule: str = "auto", quantization: str = "q4f32_1") -> Path:
    """The tiny Llama ``name`` (:data:`TINY_FOLDERS`) written as an HF folder under the cache's ``test-sources`` and
    built as a WebGPU model folder (cached by content: the background prebuild, tests/helpers/prebuild.py, builds the
    same)."""
    from webllm_widget.cache import cache_dir
    from webllm_widget.compile.pipeline import build_model_folder

    hf = TinyLlama.make(**TINY_FOLDERS[name]).write_hf(cache_dir() / "test-sources" / f"tiny-llama-{name}")
    return build_model_folder(hf, quantization=quantization, schedule=schedule, progress=False)
