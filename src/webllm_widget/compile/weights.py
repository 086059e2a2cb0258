"""Read model checkpoints (GGUF files and Hugging Face folders) as HF-named tensors, one at a time.

Both readers give the same view: ``.config`` is an HF-style dict, and ``.iter_tensors()`` yields
``(hf_name, Tensor)`` lazily, so a caller converting a model holds about one tensor in memory.
GGUF data stays memory-mapped until a tensor is touched.

Example::

    ckpt = open_checkpoint("SmolLM2-135M-Instruct.Q4_1.gguf")
    for name, t in ckpt.iter_tensors():
        print(name, t.shape, t.ggml_type)      # model.layers.0.self_attn.q_proj.weight (576, 576) Q4_1
        w = t.to_numpy()                        # float32, HF layout [out, in]
"""
from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import BadModel

__all__ = ["Tensor", "Checkpoint", "open_checkpoint", "SUPPORTED_ARCHITECTURES", "BLOCK_BYTES"]

#: Architectures the Llama-family model in ``compile/llama.py`` covers.
SUPPORTED_ARCHITECTURES = ("llama", "qwen2")

#: ggml type name -> (weights per block, bytes per block)
BLOCK_BYTES = {"F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q4_0": (32, 18), "Q4_1": (32, 20), "Q8_0": (32, 34)}

_WHAT_TO_DO_GGUF = (
    "Download the file again (it may be truncated or damaged), or pass a different GGUF/Hugging Face checkpoint."
)


@dataclass
class Tensor:
    """One checkpoint tensor. ``raw`` is the stored bytes (q/k rows already in HF order)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: str
    _raw: Callable[[], np.ndarray] = field(repr=False)

    @property
    def raw(self) -> np.ndarray:
        """The data exactly as stored, as a flat ``uint8`` array (quantized blocks stay blocks)."""
        return self._raw()

    @property
    def nbytes(self) -> int:
        per, size = BLOCK_BYTES[self.ggml_type]
        return int(np.prod(self.shape)) // per * size

    def to_numpy(self) -> np.ndarray:
        """Dequantize/convert to a float32 array of ``shape``."""
        return _decode(self.raw, self.ggml_type, self.shape)


def _decode(raw: np.ndarray, ggml_type: str, shape: tuple[int, ...]) -> np.ndarray:
    raw = np.ascontiguousarray(raw).reshape(-1)
    n = int(np.prod(shape))
    if ggml_type == "F32":
        return raw.view("<f4").reshape(shape).astype(np.float32, copy=True)
    if ggml_type == "F16":
        return raw.view("<f2").reshape(shape).astype(np.float32)
    if ggml_type == "BF16":
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    if ggml_type not in BLOCK_BYTES:
        raise BadModel(f"tensor type {ggml_type} is not supported (supported: {', '.join(BLOCK_BYTES)})")
    blocks = raw.reshape(n // 32, BLOCK_BYTES[ggml_type][1])
    out = np.empty((n // 32, 32), np.float32)
    step = 1 << 14  # blocks per chunk: keeps temporaries small next to the float32 result
    for s in range(0, blocks.shape[0], step):
        out[s:s + step] = _decode_blocks(blocks[s:s + step], ggml_type)
    return out.reshape(shape)


def _decode_blocks(blocks: np.ndarray, ggml_type: str) -> np.ndarray:
    d = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (nb, 1)
    if ggml_type == "Q8_0":
        return d * blocks[:, 2:].copy().view(np.int8)
    qs = blocks[:, 4:] if ggml_type == "Q4_1" else blocks[:, 2:]
    # ggml nibble order: byte j holds weight j (low nibble) and weight j+16 (high nibble)
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1)
    if ggml_type == "Q4_1":
        return d * q + blocks[:, 2:4].copy().view("<f2").astype(np.float32)
    return d * (q.astype(np.float32) - 8.0)


class Checkpoint:
    """A model checkpoint: ``config`` (HF-style dict) and HF-named tensors, read lazily."""

    kind: str
    path: Path
    config: dict[str, Any]

    def tensor_names(self) -> list[str]:
        raise NotImplementedError

    def get(self, hf_name: str) -> Tensor:
        raise NotImplementedError

    def iter_tensors(self) -> Iterator[tuple[str, Tensor]]:
        """Yield ``(hf_name, Tensor)`` in file order; data is read only when a tensor is touched."""
        for name in self.tensor_names():
            yield name, self.get(name)

    def __repr__(self) -> str:
        c = self.config
        return (f"<{type(self).__name__} {self.path.name}: {c['architecture']} {c['num_hidden_layers']} layers, "
                f"hidden {c['hidden_size']}, vocab {c['vocab_size']}>")


def open_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Open a GGUF file or a Hugging Face folder (``config.json`` + ``*.safetensors``).

    Raises :class:`~webllm_widget.errors.BadModel` with a message naming the file and what to do when the
    file is truncated or corrupt, or the architecture is not a Llama-family one.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise BadModel(f"{p}: no such file or folder. Pass a .gguf file or a Hugging Face model folder.")
    if p.is_dir():
        return HFCheckpoint(p)
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return GGUFCheckpoint(p)
    if p.suffix == ".json" and p.name == "config.json":
        return HFCheckpoint(p.parent)
    raise BadModel(f"{p}: not a GGUF file (it does not start with the GGUF magic bytes). "
                   f"{_WHAT_TO_DO_GGUF}")


def _check_architecture(arch: str, where: Path) -> str:
    a = arch.lower()
    aliases = {"llamaforcausallm": "llama", "llama": "llama", "mistralforcausallm": "llama",
               "qwen2forcausallm": "qwen2", "qwen2": "qwen2"}
    if a not in aliases:
        raise BadModel(
            f"{where}: architecture '{arch}' is not supported. webllm-widget compiles Llama-family models "
            f"({', '.join(SUPPORTED_ARCHITECTURES)}: e.g. SmolLM2, TinyLlama, Llama 3.x, Qwen2.5). "
            "Pick a checkpoint of one of these architectures.")
    return aliases[a]


# ----------------------------------------------------------------------------------------------- GGUF

_GGUF_NAME = [
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
# Tensors some GGUF files carry that the model computes itself (precomputed RoPE factors).
_GGUF_SKIP = re.compile(r"^(rope_freqs\.weight|blk\.\d+\.attn_rot_embd)$")


def _gguf_to_hf(name: str) -> str | None:
    for pat, fmt in _GGUF_NAME:
        m = pat.match(name)
        if m:
            return fmt.format(*m.groups())
    return None


class GGUFCheckpoint(Checkpoint):
    """A llama.cpp GGUF file. q/k rows are un-permuted back to HF order (llama arch only)."""

    kind = "gguf"

    def __init__(self, path: Path):
        self.path = Path(path)
        import gguf

        size = self.path.stat().st_size
        try:
            reader = gguf.GGUFReader(str(self.path), "r")
        except Exception as e:  # the reader raises ValueError/IndexError/struct errors on bad headers
            raise BadModel(f"{self.path}: cannot read this GGUF file: it is truncated or corrupt ({size} bytes; "
                           f"{type(e).__name__}: {e}). {_WHAT_TO_DO_GGUF}", detail={"file": str(self.path)}) from e
        self._reader = reader
        fields = reader.fields

        def get(key: str, default: Any = None) -> Any:
            f = fields.get(key)
            if f is None:
                return default
            try:
                return f.contents()
            except Exception as e:
                raise BadModel(f"{self.path}: metadata field '{key}' is unreadable ({e}). {_WHAT_TO_DO_GGUF}") from e

        self._get = get
        arch_raw = get("general.architecture")
        if not isinstance(arch_raw, str):
            raise BadModel(f"{self.path}: GGUF has no 'general.architecture'. {_WHAT_TO_DO_GGUF}")
        arch = _check_architecture(arch_raw, self.path)

        # Every tensor must lie inside the file: a truncated download fails here, before any work.
        end = 0
        for t in reader.tensors:
            end = max(end, int(t.data_offset) + int(t.n_bytes))
            ttype = t.tensor_type.name
            if ttype not in BLOCK_BYTES:
                raise BadModel(f"{self.path}: tensor {t.name} has type {ttype}, which webllm-widget cannot read "
                               f"(supported: {', '.join(BLOCK_BYTES)}). Use a Q4_0/Q4_1/Q8_0/F16/F32 GGUF.")
        if end > size:
            raise BadModel(f"{self.path}: file is truncated ({size} bytes, tensors need {end}). {_WHAT_TO_DO_GGUF}",
                           detail={"file": str(self.path), "size": size, "needed": end})

        a = arch_raw
        n_head = int(get(f"{a}.attention.head_count"))
        hidden = int(get(f"{a}.embedding_length"))
        self._tensors: dict[str, Any] = {}
        for t in reader.tensors:
            hf = _gguf_to_hf(t.name)
            if hf is None:
                if _GGUF_SKIP.match(t.name):
                    continue
                raise BadModel(f"{self.path}: unexpected tensor '{t.name}' for a {arch_raw} model. "
                               "Is this a Llama-family GGUF?")
            self._tensors[hf] = t
        n_kv = int(get(f"{a}.attention.head_count_kv", n_head))
        emb = self._tensors.get("model.embed_tokens.weight")
        if emb is None:
            raise BadModel(f"{self.path}: no token_embd.weight tensor. {_WHAT_TO_DO_GGUF}")
        vocab = int(get(f"{a}.vocab_size", 0) or int(emb.shape[-1]))
        ctx = int(get(f"{a}.context_length", 2048))
        head_dim = int(get(f"{a}.attention.key_length", hidden // n_head))
        tokens_bos = get("tokenizer.ggml.bos_token_id")
        tokens_eos = get("tokenizer.ggml.eos_token_id")
        self.config = {
            "architecture": arch,
            "hidden_size": hidden,
            "intermediate_size": int(get(f"{a}.feed_forward_length")),
            "num_attention_heads": n_head,
            "num_key_value_heads": n_kv,
            "head_dim": head_dim,
            "num_hidden_layers": int(get(f"{a}.block_count")),
            "rms_norm_eps": float(get(f"{a}.attention.layer_norm_rms_epsilon", 1e-5)),
            "rope_theta": float(get(f"{a}.rope.freq_base", 10000.0)),
            "vocab_size": vocab,
            "tie_word_embeddings": "lm_head.weight" not in self._tensors,
            "max_position_embeddings": ctx,
            "context_window_size": ctx,
            "attention_bias": "model.layers.0.self_attn.q_proj.bias" in self._tensors,
            "bos_token_id": None if tokens_bos is None else int(tokens_bos),
            "eos_token_id": None if tokens_eos is None else int(tokens_eos),
            "name": get("general.name") or self.path.stem,
        }
        scaling_type = get(f"{a}.rope.scaling.type")
        if scaling_type is not None or "rope_freqs.weight" in {t.name for t in reader.tensors}:
            self.config["rope_scaling"] = {
                "type": scaling_type,
                "factor": get(f"{a}.rope.scaling.factor"),
                "original_max_position_embeddings": get(f"{a}.rope.scaling.original_context_length"),
            }
        # llama.cpp's converter permutes q/k rows only for the llama architecture
        self._permute = arch_raw == "llama"

    def metadata(self, key: str, default: Any = None) -> Any:
        """A GGUF metadata value (e.g. ``tokenizer.ggml.tokens``), decoded to Python values."""
        return self._get(key, default)

    def metadata_keys(self) -> list[str]:
        return list(self._reader.fields)

    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    def get(self, hf_name: str) -> Tensor:
        t = self._tensors[hf_name]
        ttype = t.tensor_type.name
        shape = tuple(int(x) for x in reversed([int(s) for s in t.shape]))  # ggml [in, out] -> HF [out, in]
        heads = None
        if self._permute and hf_name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
            heads = self.config["num_attention_heads"]
        elif self._permute and hf_name.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
            heads = self.config["num_key_value_heads"]

        def raw(t=t, shape=shape, heads=heads) -> np.ndarray:
            data = np.asarray(t.data).view(np.uint8)
            if heads is None:
                return data.reshape(-1)
            rows = data.reshape(shape[0], -1)
            # the converter did rows.reshape(h, 2, d/2, ...).swapaxes(1, 2); undo it. Whole rows move,
            # so quantized blocks (which run along the input dim) stay intact.
            d = shape[0] // heads
            rows = rows.reshape(heads, d // 2, 2, rows.shape[-1]).swapaxes(1, 2)
            return np.ascontiguousarray(rows).reshape(-1)

        return Tensor(hf_name, shape, ttype, raw)


# ----------------------------------------------------------------------------------------------- HF

_ST_DTYPES = {"F32": "F32", "F16": "F16", "BF16": "BF16"}


def _read_safetensors_header(path: Path) -> tuple[dict, int]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise BadModel(f"{path}: truncated safetensors file (no header). Download the model again.")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 << 20):
            raise BadModel(f"{path}: corrupt safetensors header (length {n}). Download the model again.")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise BadModel(f"{path}: corrupt safetensors header ({e}). Download the model again.") from e
    base = 8 + n
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if base + end > size:
        raise BadModel(f"{path}: safetensors file is truncated ({size} bytes, tensors need {base + end}). "
                       "Download the model again.")
    return header, base


class HFCheckpoint(Checkpoint):
    """A Hugging Face model folder: ``config.json`` and one or more ``*.safetensors`` files."""

    kind = "hf"

    def __init__(self, folder: Path):
        self.path = Path(folder)
        cfg_path = self.path / "config.json"
        if not cfg_path.exists():
            raise BadModel(f"{self.path}: no config.json. Pass a Hugging Face model folder "
                           "(config.json, tokenizer.json, *.safetensors) or a .gguf file.")
        try:
            hf = json.loads(cfg_path.read_text())
        except ValueError as e:
            raise BadModel(f"{cfg_path}: not valid JSON ({e}). Download the model again.") from e
        archs = hf.get("architectures") or [hf.get("model_type", "?")]
        arch = _check_architecture(str(archs[0]), cfg_path)
        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            raise BadModel(f"{self.path}: no *.safetensors files. Download the safetensors weights "
                           "(PyTorch .bin files are not read).")
        self._where: dict[str, tuple[Path, dict, int]] = {}
        for fpath in files:
            header, base = _read_safetensors_header(fpath)
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                if info["dtype"] not in _ST_DTYPES:
                    raise BadModel(f"{fpath}: tensor {name} has dtype {info['dtype']}; only F32/F16/BF16 are read.")
                if name.endswith("rotary_emb.inv_freq"):
                    continue
                self._where[name] = (fpath, info, base)
        n_head = int(hf["num_attention_heads"])
        hidden = int(hf["hidden_size"])
        ctx = int(hf.get("max_position_embeddings", 2048))
        tie = bool(hf.get("tie_word_embeddings", False)) or "lm_head.weight" not in self._where
        self.config = {
            "architecture": arch,
            "hidden_size": hidden,
            "intermediate_size": int(hf["intermediate_size"]),
            "num_attention_heads": n_head,
            "num_key_value_heads": int(hf.get("num_key_value_heads") or n_head),
            "head_dim": int(hf.get("head_dim") or hidden // n_head),
            "num_hidden_layers": int(hf["num_hidden_layers"]),
            "rms_norm_eps": float(hf.get("rms_norm_eps", 1e-6)),
            "rope_theta": float(hf.get("rope_theta", 10000.0)),
            "vocab_size": int(hf["vocab_size"]),
            "tie_word_embeddings": tie,
            "max_position_embeddings": ctx,
            "context_window_size": ctx,
            "attention_bias": bool(hf.get("attention_bias", arch == "qwen2")),
            "bos_token_id": hf.get("bos_token_id"),
            "eos_token_id": hf.get("eos_token_id"),
            "name": self.path.name,
        }
        if hf.get("rope_scaling"):
            self.config["rope_scaling"] = hf["rope_scaling"]
        if tie:
            self._where.pop("lm_head.weight", None)

    def tensor_names(self) -> list[str]:
        return list(self._where)

    def get(self, hf_name: str) -> Tensor:
        fpath, info, base = self._where[hf_name]
        start, stop = info["data_offsets"]
        shape = tuple(int(s) for s in info["shape"])

        def raw() -> np.ndarray:
            mm = np.memmap(fpath, dtype=np.uint8, mode="r", offset=base + start, shape=(stop - start,))
            return mm

        return Tensor(hf_name, shape, _ST_DTYPES[info["dtype"]], raw)
