"""Weight quantization: a pass over the nn module plus the matching conversion of checkpoint tensors.

Modes (the ``quantization`` name written into ``_metadata`` and ``mlc-chat-config.json``):

``q0f32``
    No quantization, float32 weights and compute: the accuracy baseline.
``q4f32_1``
    4-bit symmetric weights, one float32 scale per group of 32 along the input dimension,
    float32 compute. Runs on every WebGPU adapter (no ``shader-f16`` needed).
``q4f16_1``
    The same with float16 scales, activations and KV cache; needs ``shader-f16``.
``ggml``
    Lossless for GGUF input: keeps the file's Q4_0/Q4_1 blocks (scale and min per 32
    weights, stored here as float32, which holds the file's float16 values exactly) and
    Q8_0 blocks (scale + 32 int8), dequantized on the fly by the kernels; float32 compute.
    Each matrix keeps its own file format (see :func:`ggml_quantization`).

Packed layouts (per output row; ``K`` = input features, a multiple of 32):

=========  ==========================================  =================================
format     parameters                                  weight ``w[n, k]``
=========  ==========================================  =================================
``q4``     ``q_weight`` u32 [N, K/8], ``q_scale`` [N, K/32]          ``(nib - 7) * s``
``q4_1``   ``q_weight`` u32 [N, K/8], ``q_scale``, ``q_min`` f32 [N, K/32]  ``nib * s + m``
``q8_0``   ``q_weight`` u32 [N, K/4], ``q_scale`` f32 [N, K/32]     ``(byte - 128) * s``
``f32``    ``weight`` [N, K] in the compute dtype                    ``weight``
=========  ==========================================  =================================

Nibble ``k`` of a row sits in word ``k // 8`` at bit ``4 * (k % 8)``; byte ``k`` of a Q8_0 row
in word ``k // 4`` at bit ``8 * (k % 4)`` (stored biased by 128: WebGPU has no 8-bit storage).

Example::

    q = Quantization("q4f32_1")
    model = quantize_module(LlamaForCausalLM(cfg), q)
    for name, array in param_records(checkpoint, cfg, q):
        ...
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Iterator

import numpy as np
from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from ..errors import BadModel
from .llama import LlamaConfig, LlamaEmbedding

MODES = ("q0f32", "q4f32_1", "q4f16_1", "ggml")
GROUP = 32


@dataclasses.dataclass(frozen=True)
class Quantization:
    """A quantization mode; for ``ggml`` also the storage format of each matrix (module path → format)."""

    name: str
    formats: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.name not in MODES:
            raise BadModel(f"unknown quantization {self.name!r}; choose one of {', '.join(MODES)}.")

    @property
    def compute_dtype(self) -> str:
        return "float16" if self.name == "q4f16_1" else "float32"

    def format_of(self, path: str, in_features: int) -> str:
        """Storage format of the matrix at module ``path`` (e.g. ``model.layers.0.mlp.down_proj``)."""
        if self.name == "q0f32":
            return "f32"
        if self.name == "ggml":
            return dict(self.formats).get(path, "f32")
        return "q4" if in_features % GROUP == 0 else "f32"

    def key(self) -> str:
        """A stable text for content hashes."""
        return self.name + "".join(f";{p}={f}" for p, f in sorted(self.formats))


def as_quantization(q: "Quantization | str") -> Quantization:
    return q if isinstance(q, Quantization) else Quantization(str(q))


# ---------------------------------------------------------------------------------------------
# Dequantizing expressions shared by the linear and embedding modules.

def _dequant(fmt: str, params: list[te.Tensor], n, k, dtype: str):
    """The weight ``w[n, k]`` read out of the packed parameters, in ``dtype``."""
    if fmt == "f32":
        return params[0][n, k].astype(dtype)
    q = params[0]
    s = params[1][n, k // GROUP].astype(dtype)
    if fmt == "q8_0":
        byte = (q[n, k // 4] >> ((k % 4) * 8).astype("uint32")) & tirx.const(255, "uint32")
        return (byte.astype(dtype) - tirx.const(128, dtype)) * s
    nib = ((q[n, k // 8] >> ((k % 8) * 4).astype("uint32")) & tirx.const(15, "uint32")).astype(dtype)
    if fmt == "q4":
        return (nib - tirx.const(7, dtype)) * s
    if fmt == "q4_1":
        return nib * s + params[2][n, k // GROUP].astype(dtype)
    raise ValueError(f"unknown weight format {fmt!r}")


def _packed_params(fmt: str, n: int, k: int, dtype: str) -> dict[str, nn.Parameter]:
    if fmt == "f32":
        return {"weight": nn.Parameter((n, k), dtype)}
    sdt = "float32" if fmt in ("q4_1", "q8_0") else dtype
    per_word = 4 if fmt == "q8_0" else 8
    out = {"q_weight": nn.Parameter((n, k // per_word), "uint32"),
           "q_scale": nn.Parameter((n, k // GROUP), sdt)}
    if fmt == "q4_1":
        out["q_min"] = nn.Parameter((n, k // GROUP), "float32")
    return out


def _code(fmt: str, q: te.Tensor, n, k, dtype: str):
    """The raw integer code of ``w[n, k]`` (nibble 0..15, or byte 0..255), as ``dtype``."""
    if fmt == "q8_0":
        return ((q[n, k // 4] >> ((k % 4) * 8).astype("uint32")) & tirx.const(255, "uint32")).astype(dtype)
    return ((q[n, k // 8] >> ((k % 8) * 4).astype("uint32")) & tirx.const(15, "uint32")).astype(dtype)


#: Formats whose weight is ``code * scale + offset`` with one scale/offset per group of 32.
FACTORABLE = ("q4", "q4_1", "q8_0")


def _matvec_factored(x: Tensor, fmt: str, params: list[Tensor], n: int, k: int, out_dtype: str, name: str) -> Tensor:
    """``x @ W.T`` with the group's scale and offset taken out of the inner sum.

    ``sum_k x_k (c_k s_g + o_g) = sum_g (s_g sum_j x_j c_j + o_g sum_j x_j)``: the inner loop does one
    multiply-add per weight instead of two (on a software adapter the arithmetic per weight is most
    of a GEMV's cost). Three stages: ``part[.., n, g]`` (codes times inputs), ``xsum[.., g]`` (inputs),
    and the sum over groups; :class:`webllm_widget.compile.schedules.RowTileGemv` keeps the first two
    in registers.
    """
    acc = out_dtype
    groups = k // GROUP

    def compute(xt: te.Tensor, *ps: te.Tensor):
        lead = list(xt.shape[:-1])
        j = te.reduce_axis((0, GROUP), name="j")
        part = te.compute((*lead, n, groups), lambda *i: te.sum(
            xt[(*i[:-2], i[-1] * GROUP + j)].astype(acc) * _code(fmt, ps[0], i[-2], i[-1] * GROUP + j, acc), axis=j),
            name=name + "_part")
        j2 = te.reduce_axis((0, GROUP), name="j2")
        xsum = te.compute((*lead, groups), lambda *i: te.sum(
            xt[(*i[:-1], i[-1] * GROUP + j2)].astype(acc), axis=j2), name=name + "_xsum")
        g = te.reduce_axis((0, groups), name="g")

        def body(*i):
            row = i[-1]
            s = ps[1][row, g].astype(acc)
            if fmt == "q4_1":
                off = ps[2][row, g].astype(acc)
            else:
                off = s * tirx.const(-7.0 if fmt == "q4" else -128.0, acc)
            return te.sum(part[(*i, g)] * s + xsum[(*i[:-1], g)] * off, axis=g)

        return te.compute((*lead, n), body, name=name)

    return op.tensor_expr_op(compute, name, [x, *params])


def _matvec(x: Tensor, fmt: str, params: list[Tensor], n: int, k: int, out_dtype: str, name: str,
            factored: bool = False) -> Tensor:
    """``x @ W.T`` with W dequantized inside the reduction (no dequantized copy is ever stored)."""
    if factored and fmt in FACTORABLE and k % GROUP == 0:
        return _matvec_factored(x, fmt, params, n, k, out_dtype, name)
    acc = out_dtype

    def compute(xt: te.Tensor, *ps: te.Tensor):
        r = te.reduce_axis((0, k), name="k")
        lead = list(xt.shape[:-1])

        def body(*idx):
            row = idx[-1]
            return te.sum(xt[(*idx[:-1], r)].astype(acc) * _dequant(fmt, list(ps), row, r, acc), axis=r)

        return te.compute((*lead, n), body, name=name)

    return op.tensor_expr_op(compute, name, [x, *params])


class QuantizedLinear(nn.Module):
    """``y = x W^T (+ b)`` with W stored in a packed format and dequantized on the fly."""

    def __init__(self, in_features: int, out_features: int, fmt: str, dtype: str, bias: bool,
                 out_dtype: str | None = None, factored: bool = False):
        self.in_features, self.out_features, self.fmt, self.factored = in_features, out_features, fmt, factored
        self.dtype, self.out_dtype = dtype, out_dtype or dtype
        self._names = list(_packed_params(fmt, out_features, in_features, dtype))
        for pname, p in _packed_params(fmt, out_features, in_features, dtype).items():
            setattr(self, pname, p)
        self.bias = nn.Parameter((out_features,), self.out_dtype) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        y = _matvec(x, self.fmt, [getattr(self, p) for p in self._names], self.out_features,
                    self.in_features, self.out_dtype, f"dequant_matmul_{self.fmt}", self.factored)
        if self.bias is not None:
            y = y + self.bias
        return y


class QuantizedEmbedding(nn.Module):
    """Token embedding in a packed format; also the tied LM head (dequantized inside the reduction)."""

    def __init__(self, vocab_size: int, hidden_size: int, fmt: str, dtype: str, factored: bool = False):
        self.vocab_size, self.hidden_size, self.fmt, self.dtype = vocab_size, hidden_size, fmt, dtype
        self.factored = factored
        self._names = list(_packed_params(fmt, vocab_size, hidden_size, dtype))
        for pname, p in _packed_params(fmt, vocab_size, hidden_size, dtype).items():
            setattr(self, pname, p)

    def forward(self, ids: Tensor) -> Tensor:
        fmt, dtype, h = self.fmt, self.dtype, self.hidden_size

        def compute(idt: te.Tensor, *ps: te.Tensor):
            return te.compute((idt.shape[0], h), lambda i, j: _dequant(fmt, list(ps), idt[i], j, dtype),
                              name="dequant_take")

        return op.tensor_expr_op(compute, f"dequant_take_{fmt}", [ids, *[getattr(self, p) for p in self._names]])

    def lm_head_forward(self, x: Tensor) -> Tensor:
        return _matvec(x, self.fmt, [getattr(self, p) for p in self._names], self.vocab_size,
                       self.hidden_size, "float32", f"dequant_lm_head_{self.fmt}", self.factored)


def quantize_module(model: nn.Module, quant: Quantization | str, *, factored: bool = False) -> nn.Module:
    """Replace the model's matrices by packed versions for ``quant`` (in place; returns the model).

    Norms and biases stay in the compute dtype. ``q4f16_1`` converts the model to float16 first.
    ``factored`` computes the matrix-vector products with the group scale/offset outside the inner
    sum (see :func:`_matvec_factored`; the software-adapter schedules are written for it).
    """
    quant = as_quantization(quant)
    if quant.compute_dtype != "float32":
        model.to(quant.compute_dtype)
    dtype = quant.compute_dtype

    def walk(node: nn.Module, prefix: str) -> None:
        for attr, child in list(vars(node).items()):
            path = f"{prefix}{attr}"
            if isinstance(child, nn.ModuleList):
                for i, sub in enumerate(child):
                    walk(sub, f"{path}.{i}.")
            elif isinstance(child, nn.Linear):
                fmt = quant.format_of(path, int(child.in_features))
                if fmt != "f32" or quant.name != "q0f32":
                    setattr(node, attr, QuantizedLinear(int(child.in_features), int(child.out_features), fmt,
                                                        dtype, child.bias is not None, child.out_dtype, factored))
            elif isinstance(child, LlamaEmbedding):
                fmt = quant.format_of(path, child.hidden_size)
                if fmt != "f32" or quant.name != "q0f32":
                    setattr(node, attr, QuantizedEmbedding(child.vocab_size, child.hidden_size, fmt, dtype, factored))
            elif isinstance(child, nn.Module):
                walk(child, f"{path}.")

    walk(model, "")
    return model


# ---------------------------------------------------------------------------------------------
# Weight conversion.

def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """uint8 values 0..15, shape [N, K] -> uint32 [N, K/8] (element k at bit 4*(k%8) of word k//8)."""
    q = q.astype(np.uint32).reshape(q.shape[0], -1, 8)
    return np.bitwise_or.reduce(q << (np.arange(8, dtype=np.uint32) * 4), axis=-1)


def _pack_bytes(q: np.ndarray) -> np.ndarray:
    """uint8 values, shape [N, K] -> uint32 [N, K/4] (byte k at bit 8*(k%4) of word k//4)."""
    q = q.astype(np.uint32).reshape(q.shape[0], -1, 4)
    return np.bitwise_or.reduce(q << (np.arange(4, dtype=np.uint32) * 8), axis=-1)


def quantize_q4(w: np.ndarray, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Symmetric 4-bit, group 32: scale = max|w| / 7, nibble = round(w / scale) + 7 (0..14)."""
    n, k = w.shape
    g = w.astype(np.float32).reshape(n, k // GROUP, GROUP)
    scale = np.abs(g).max(axis=-1) / 7.0
    scale = scale.astype(dtype).astype(np.float32)  # quantize against the scale the kernel will see
    safe = np.where(scale == 0, 1.0, scale)
    q = np.clip(np.rint(g / safe[..., None]) + 7, 0, 14).astype(np.uint8).reshape(n, k)
    return {"q_weight": _pack_nibbles(q), "q_scale": scale.astype(dtype)}


def dequantize(fmt: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Inverse of the packing, in numpy: what the kernels compute for ``w`` (float32)."""
    if fmt == "f32":
        return arrays["weight"].astype(np.float32)
    qw = arrays["q_weight"]
    n = qw.shape[0]
    if fmt == "q8_0":
        q = ((qw[..., None] >> (np.arange(4, dtype=np.uint32) * 8)) & 255).reshape(n, -1).astype(np.float32) - 128
    else:
        q = ((qw[..., None] >> (np.arange(8, dtype=np.uint32) * 4)) & 15).reshape(n, -1).astype(np.float32)
        if fmt == "q4":
            q -= 7
    s = np.repeat(arrays["q_scale"].astype(np.float32), GROUP, axis=1)
    w = q * s
    if fmt == "q4_1":
        w += np.repeat(arrays["q_min"].astype(np.float32), GROUP, axis=1)
    return w


_BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}


_ROWS_PER_CHUNK = 2048  # repack this many rows at a time: peak memory stays near the output arrays


def _ggml_blocks(t: Any) -> tuple[str, dict[str, np.ndarray]]:
    """Repack one GGUF tensor's raw blocks into this module's layout (exact: f16 → f32 is lossless)."""
    n, k = int(t.shape[0]), int(t.shape[1])
    kind = t.ggml_type
    raw = np.frombuffer(memoryview(t.raw), dtype=np.uint8)
    nb = k // GROUP
    size = _BLOCK_BYTES[kind]
    if raw.size != n * nb * size:
        raise BadModel(f"tensor of shape {t.shape} has {raw.size} bytes of {kind} blocks, expected {n * nb * size}; "
                       "the GGUF file looks truncated or corrupt: download it again.")
    blocks = raw.reshape(n, nb, size)
    parts = [_repack_rows(kind, blocks[i:i + _ROWS_PER_CHUNK], k) for i in range(0, n, _ROWS_PER_CHUNK)]
    fmt = parts[0][0]
    return fmt, {key: np.concatenate([a[key] for _, a in parts], axis=0) for key in parts[0][1]}


def _repack_rows(kind: str, blocks: np.ndarray, k: int) -> tuple[str, dict[str, np.ndarray]]:
    n = blocks.shape[0]
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    if kind == "Q8_0":
        qs = blocks[..., 2:34].copy().view(np.int8).astype(np.int16) + 128
        return "q8_0", {"q_weight": _pack_bytes(qs.reshape(n, k).astype(np.uint8)), "q_scale": d}
    off = 4 if kind == "Q4_1" else 2
    qs = blocks[..., off:off + 16]
    nib = np.concatenate([qs & 15, qs >> 4], axis=-1)  # ggml: byte j holds weight j (low) and j+16 (high)
    if kind == "Q4_1":
        m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    else:
        m = -8.0 * d
    return "q4_1", {"q_weight": _pack_nibbles(nib.reshape(n, k)), "q_scale": d, "q_min": m}


def _module_sources(cfg: LlamaConfig) -> list[tuple[str, list[str], bool]]:
    """(module path, HF tensor names stacked along rows, is a matrix) for every module with weights."""
    out: list[tuple[str, list[str], bool]] = [("model.embed_tokens", ["model.embed_tokens.weight"], True)]
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


def ggml_quantization(checkpoint: Any, cfg: LlamaConfig | None = None) -> Quantization:
    """The lossless ``ggml`` mode for a GGUF checkpoint: each matrix keeps its file's block format.

    Q4_0 and Q4_1 are both stored as ``q4_1`` (Q4_0's ``(q - 8) d`` is ``q d + (-8 d)`` exactly),
    Q8_0 as ``q8_0``; matrices whose stacked parts differ, or that are float, stay ``f32``.
    """
    cfg = cfg or LlamaConfig.from_dict(checkpoint.config)
    formats = []
    for path, names, is_matrix in _module_sources(cfg):
        if not is_matrix:
            continue
        kinds = {checkpoint.get(n).ggml_type for n in names}
        if kinds <= {"Q4_0", "Q4_1"}:
            formats.append((path, "q4_1"))
        elif kinds == {"Q8_0"}:
            formats.append((path, "q8_0"))
    return Quantization("ggml", tuple(formats))


def param_records(checkpoint: Any, config: LlamaConfig, quant: Quantization | str) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(param name, array)`` for every parameter of the quantized module, in module order.

    ``checkpoint`` follows ``webllm_widget.compile.weights.open_checkpoint``: ``.get(hf_name)``
    returns a tensor with ``.shape``, ``.ggml_type``, ``.raw`` and ``.to_numpy()``. One module's
    tensors are in memory at a time.
    """
    quant = as_quantization(quant)
    dtype = quant.compute_dtype
    for path, names, is_matrix in _module_sources(config):
        tensors = [checkpoint.get(n) for n in names]
        if not is_matrix:
            yield path, np.concatenate([t.to_numpy().reshape(-1) for t in tensors]).astype(dtype)
            continue
        in_features = int(tensors[0].shape[1])
        fmt = quant.format_of(path, in_features)
        if fmt in ("q4_1", "q8_0"):
            parts = [_ggml_blocks(t) for t in tensors]
            if {f for f, _ in parts} != {fmt}:
                raise BadModel(f"{path}: the checkpoint's blocks do not match the planned format {fmt}; "
                               "plan the ggml mode with ggml_quantization() on the same checkpoint.")
            arrays = {key: np.concatenate([a[key] for _, a in parts], axis=0) for key in parts[0][1]}
        else:
            w = np.concatenate([t.to_numpy() for t in tensors], axis=0).astype(np.float32)
            arrays = quantize_q4(w, dtype) if fmt == "q4" else {"weight": w.astype(dtype)}
        for key, arr in arrays.items():
            yield f"{path}.{key}", np.ascontiguousarray(arr)


def expected_params(named_params: Iterable[tuple[str, nn.Parameter]]) -> list[dict[str, Any]]:
    """``_metadata``'s ``params`` list: name, shape and dtype of each parameter, in call order."""
    return [{"name": n, "shape": [int(s) for s in p.shape], "dtype": str(p.dtype)} for n, p in named_params]
