"""The model on the page's CPU: wasm32 + SIMD128 target, SIMD-friendly weight layout and hand-scheduled kernels.

The Llama module from :mod:`.model_lib` is exported for
``{"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm", "mattr": ["+simd128"]}``; TVM already
has CPU kernels for the paged KV cache and the sampling functions have CPU variants. What TVM
leaves naive are the dequantizing matrix-vector products, which are nearly all of decode's
work, and the dequantizing embedding lookup. This module replaces those with kernels written
for one wasm thread and 128-bit SIMD:

- **Layout.** Quantized words are interleaved so that 4 consecutive elements sit at the same
  bit offset of 4 consecutive words: for 4-bit weights, nibble ``j`` of word ``l`` of a group of
  32 holds element ``4j + l``; for 8-bit ones byte ``j`` of word ``l`` of a chunk of 16 holds
  element ``4j + l``. wasm SIMD has no per-lane variable shift, so one ``u32x4`` load, one
  uniform shift and one mask give 4 elements that line up with an ``f32x4`` load of ``x``.
  Shapes are unchanged, only the order of bits within each group: :func:`interleave_words`
  repacks ``q_weight`` records, :func:`cpu_param_records` does it for a whole model.
- **Kernels.** Per output row and group, a 4-lane partial dot product of the raw integers with
  ``x``; the scale and the offset (``q_min``, or ``-7 s`` / ``-128 s``) are applied once per group,
  the offset against per-lane sums of ``x`` computed once per call. Decode (one token) uses
  :func:`gemv_kernel`; prefill :func:`gemm_kernel`, which decodes each weight word once for a tile of
  :data:`TOKEN_TILE` tokens.

Example::

    from webllm_widget.compile.cpu import build_cpu_library, cpu_param_records
    path = build_cpu_library(cfg, quant)                  # linked .wasm (cached by content hash)
    for name, arr in cpu_param_records(param_records(ckpt, cfg, quant), quant): ...
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

#: The device name the model folder builder and the widget use for this target.
DEVICE = "cpu"
#: Bump when the kernels or the layout change (part of the library's cache key).
CPU_KERNELS_VERSION = "2"
GROUP = 32
LANES = 4


def cpu_target():
    """``tvm.target.Target`` for wasm32 with SIMD128 (host and device are the same)."""
    import tvm

    t = {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm", "mattr": ["+simd128"]}
    return tvm.target.Target(t, host=t)


# ---------------------------------------------------------------------------------------------
# Weight layout

def _bits(fmt: str) -> int:
    return 8 if fmt == "q8_0" else 4


def interleave_words(q_weight: np.ndarray, bits: int) -> np.ndarray:
    """Repack ``q_weight`` (uint32 ``[N, W]``, element ``k`` in word ``k // e`` at bit ``bits * (k % e)``)
    into the SIMD layout: element ``c * 4e + 4j + l`` in word ``4c + l`` at bit ``bits * j``.

    ``e = 32 // bits`` elements per word; ``W`` must be a multiple of 4.
    """
    q = np.asarray(q_weight, dtype=np.uint32)
    n, w = q.shape
    e = 32 // bits
    mask = np.uint32((1 << bits) - 1)
    vals = (q[..., None] >> (np.arange(e, dtype=np.uint32) * bits)) & mask  # [N, W, e], element order
    vals = vals.reshape(n, w // LANES, e, LANES)  # element c*4e + 4j + l -> [c, j, l]
    vals = vals.transpose(0, 1, 3, 2)  # [N, c, l, j]: word 4c + l, slot j
    out = np.bitwise_or.reduce(vals << (np.arange(e, dtype=np.uint32) * bits), axis=-1)
    return np.ascontiguousarray(out.reshape(n, w).astype(np.uint32))


def deinterleave_words(q_weight: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`interleave_words`."""
    q = np.asarray(q_weight, dtype=np.uint32)
    n, w = q.shape
    e = 32 // bits
    mask = np.uint32((1 << bits) - 1)
    vals = (q[..., None] >> (np.arange(e, dtype=np.uint32) * bits)) & mask  # [N, W, j]
    vals = vals.reshape(n, w // LANES, LANES, e).transpose(0, 1, 3, 2).reshape(n, w, e)
    out = np.bitwise_or.reduce(vals << (np.arange(e, dtype=np.uint32) * bits), axis=-1)
    return np.ascontiguousarray(out.astype(np.uint32))


def cpu_param_records(records: Iterable[tuple[str, np.ndarray]]) -> Iterator[tuple[str, np.ndarray]]:
    """The model's parameter records with every ``q_weight`` repacked into the SIMD layout.

    ``records`` come from :func:`.quantize.param_records` (a ``q_weight`` is always followed by
    its ``q_scale``). The width of the pair tells the format: a row of ``K`` elements has ``K / 32``
    scales and ``K / 8`` words at 4 bits or ``K / 4`` words at 8 bits.
    """
    pending: tuple[str, np.ndarray] | None = None
    for name, arr in records:
        if pending is not None:
            pname, words = pending
            pending = None
            if name != pname[: -len("q_weight")] + "q_scale":
                raise ValueError(f"{pname} is not followed by its q_scale (got {name})")
            bits = 4 if words.shape[-1] * 8 == arr.shape[-1] * GROUP else 8
            yield pname, interleave_words(words, bits)
        if name.endswith(".q_weight"):
            pending = (name, arr)
            continue
        yield name, arr
    if pending is not None:
        raise ValueError(f"{pending[0]} is not followed by its q_scale")


# ---------------------------------------------------------------------------------------------
# Kernels (one wasm thread; the innermost 4-wide loops become SIMD128 instructions)

def _layout(fmt: str) -> tuple[int, int, int]:
    """(bits, elements per word, 16-element-or-more chunks per group of 32) of a quantized format."""
    bits = _bits(fmt)
    per_word = 32 // bits
    return bits, per_word, GROUP // (LANES * per_word)


def _offset(fmt: str, s, m):
    """The per-group additive term of ``w = raw * s + offset`` (raw = the stored unsigned integer)."""
    from tvm.script import tirx as T

    if fmt == "q4_1":
        return m
    return s * T.float32(-7.0 if fmt == "q4" else -128.0)


def gemv_kernel(fmt: str, k: int, n: int):
    """``y[b, t, :] = x[b, t, :] @ W.T`` for W ``[n, k]`` stored in ``fmt`` (SIMD layout), as a TIR PrimFunc.

    Parameters, in the order the model's ``call_tir`` passes them: ``x`` ``[b, t, k]`` float32, the
    packed weight (``weight`` for ``f32``; ``q_weight``, ``q_scale``[, ``q_min``] otherwise), ``y``.
    """
    from tvm.script import tirx as T

    if k % GROUP:
        raise ValueError(f"input features {k} is not a multiple of {GROUP}")
    groups = k // GROUP

    if fmt == "f32":
        @T.prim_func(private=True, s_tir=True)
        def gemv_f32(var_x: T.handle, w: T.Buffer((n, k), "float32"), var_y: T.handle):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8})
            b, t = T.int64(), T.int64()
            x = T.match_buffer(var_x, (b, t, k), "float32")
            y = T.match_buffer(var_y, (b, t, n), "float32")
            for bi, ti in T.grid(b, t):
                with T.sblock("gemv"):
                    vb, vt = T.axis.remap("SS", [bi, ti])
                    T.reads(x[vb, vt, 0:k], w[0:n, 0:k])
                    T.writes(y[vb, vt, 0:n])
                    acc = T.sblock_alloc_buffer((LANES,), "float32")
                    for row in T.serial(n):
                        for lane in T.vectorized(LANES):
                            acc[lane] = T.float32(0)
                        for c in T.serial(k // LANES):
                            for lane in T.vectorized(LANES):
                                acc[lane] = acc[lane] + w[row, c * LANES + lane] * x[vb, vt, c * LANES + lane]
                        y[vb, vt, row] = acc[0] + acc[1] + acc[2] + acc[3]

        return gemv_f32

    bits, per_word, chunks = _layout(fmt)
    words = k // per_word
    mask = (1 << bits) - 1
    span = LANES * per_word  # elements covered by one 4-word chunk

    if fmt == "q4_1":
        @T.prim_func(private=True, s_tir=True)
        def gemv_q(var_x: T.handle, w: T.Buffer((n, words), "uint32"), s: T.Buffer((n, groups), "float32"),
                   m: T.Buffer((n, groups), "float32"), var_y: T.handle):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8})
            b, t = T.int64(), T.int64()
            x = T.match_buffer(var_x, (b, t, k), "float32")
            y = T.match_buffer(var_y, (b, t, n), "float32")
            for bi, ti in T.grid(b, t):
                with T.sblock("gemv"):
                    vb, vt = T.axis.remap("SS", [bi, ti])
                    T.reads(x[vb, vt, 0:k], w[0:n, 0:words], s[0:n, 0:groups], m[0:n, 0:groups])
                    T.writes(y[vb, vt, 0:n])
                    xs = T.sblock_alloc_buffer((groups * LANES,), "float32")
                    acc = T.sblock_alloc_buffer((LANES,), "float32")
                    part = T.sblock_alloc_buffer((LANES,), "float32")
                    for g in T.serial(groups):
                        for lane in T.vectorized(LANES):
                            xs[g * LANES + lane] = T.float32(0)
                        for j in T.serial(GROUP // LANES):
                            for lane in T.vectorized(LANES):
                                xs[g * LANES + lane] = xs[g * LANES + lane] + x[vb, vt, g * GROUP + j * LANES + lane]
                    for row in T.serial(n):
                        for lane in T.vectorized(LANES):
                            acc[lane] = T.float32(0)
                        for g in T.serial(groups):
                            for lane in T.vectorized(LANES):
                                part[lane] = T.float32(0)
                            for c in T.unroll(chunks):
                                for j in T.unroll(per_word):
                                    for lane in T.vectorized(LANES):
                                        part[lane] = part[lane] + T.Cast("float32", T.bitwise_and(
                                            T.shift_right(w[row, (g * chunks + c) * LANES + lane], T.uint32(bits * j)),
                                            T.uint32(mask))) * x[vb, vt, g * GROUP + c * span + j * LANES + lane]
                            for lane in T.vectorized(LANES):
                                acc[lane] = acc[lane] + part[lane] * s[row, g] + m[row, g] * xs[g * LANES + lane]
                        y[vb, vt, row] = acc[0] + acc[1] + acc[2] + acc[3]

        return gemv_q

    off = -7.0 if fmt == "q4" else -128.0

    @T.prim_func(private=True, s_tir=True)
    def gemv_q_sym(var_x: T.handle, w: T.Buffer((n, words), "uint32"), s: T.Buffer((n, groups), "float32"),
                   var_y: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8})
        b, t = T.int64(), T.int64()
        x = T.match_buffer(var_x, (b, t, k), "float32")
        y = T.match_buffer(var_y, (b, t, n), "float32")
        for bi, ti in T.grid(b, t):
            with T.sblock("gemv"):
                vb, vt = T.axis.remap("SS", [bi, ti])
                T.reads(x[vb, vt, 0:k], w[0:n, 0:words], s[0:n, 0:groups])
                T.writes(y[vb, vt, 0:n])
                xs = T.sblock_alloc_buffer((groups * LANES,), "float32")
                acc = T.sblock_alloc_buffer((LANES,), "float32")
                part = T.sblock_alloc_buffer((LANES,), "float32")
                for g in T.serial(groups):
                    for lane in T.vectorized(LANES):
                        xs[g * LANES + lane] = T.float32(0)
                    for j in T.serial(GROUP // LANES):
                        for lane in T.vectorized(LANES):
                            xs[g * LANES + lane] = xs[g * LANES + lane] + x[vb, vt, g * GROUP + j * LANES + lane]
                for row in T.serial(n):
                    for lane in T.vectorized(LANES):
                        acc[lane] = T.float32(0)
                    for g in T.serial(groups):
                        for lane in T.vectorized(LANES):
                            part[lane] = T.float32(0)
                        for c in T.unroll(chunks):
                            for j in T.unroll(per_word):
                                for lane in T.vectorized(LANES):
                                    part[lane] = part[lane] + T.Cast("float32", T.bitwise_and(
                                        T.shift_right(w[row, (g * chunks + c) * LANES + lane], T.uint32(bits * j)),
                                        T.uint32(mask))) * x[vb, vt, g * GROUP + c * span + j * LANES + lane]
                        for lane in T.vectorized(LANES):
                            acc[lane] = acc[lane] + (part[lane] + T.float32(off) * xs[g * LANES + lane]) * s[row, g]
                    y[vb, vt, row] = acc[0] + acc[1] + acc[2] + acc[3]

    return gemv_q_sym


def take_kernel(fmt: str, vocab: int, hidden: int):
    """Embedding lookup ``out[i, :] = W[ids[i], :]`` dequantized from ``fmt`` (SIMD layout)."""
    from tvm.script import tirx as T

    if fmt == "f32":
        @T.prim_func(private=True, s_tir=True)
        def take_f32(var_ids: T.handle, w: T.Buffer((vocab, hidden), "float32"), var_out: T.handle):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8})
            t = T.int64()
            ids = T.match_buffer(var_ids, (t,), "int32")
            out = T.match_buffer(var_out, (t, hidden), "float32")
            for i, c in T.grid(t, hidden):
                with T.sblock("take"):
                    vi, vc = T.axis.remap("SS", [i, c])
                    out[vi, vc] = w[ids[vi], vc]

        return take_f32

    bits, per_word, chunks = _layout(fmt)
    words = hidden // per_word
    groups = hidden // GROUP
    mask = (1 << bits) - 1
    span = LANES * per_word
    off = -7.0 if fmt == "q4" else -128.0

    if fmt == "q4_1":
        @T.prim_func(private=True, s_tir=True)
        def take_q4_1(var_ids: T.handle, w: T.Buffer((vocab, words), "uint32"),
                      s: T.Buffer((vocab, groups), "float32"), m: T.Buffer((vocab, groups), "float32"),
                      var_out: T.handle):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8})
            t = T.int64()
            ids = T.match_buffer(var_ids, (t,), "int32")
            out = T.match_buffer(var_out, (t, hidden), "float32")
            for i, c in T.grid(t, hidden):
                with T.sblock("take"):
                    vi, vc = T.axis.remap("SS", [i, c])
                    out[vi, vc] = T.Cast("float32", T.bitwise_and(T.shift_right(
                        w[ids[vi], (vc // GROUP * chunks + vc % GROUP // span) * LANES + vc % LANES],
                        T.Cast("uint32", vc % span // LANES * bits)), T.uint32(mask))) * s[ids[vi], vc // GROUP] \
                        + m[ids[vi], vc // GROUP]

        return take_q4_1

    @T.prim_func(private=True, s_tir=True)
    def take_q_sym(var_ids: T.handle, w: T.Buffer((vocab, words), "uint32"),
                   s: T.Buffer((vocab, groups), "float32"), var_out: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8})
        t = T.int64()
        ids = T.match_buffer(var_ids, (t,), "int32")
        out = T.match_buffer(var_out, (t, hidden), "float32")
        for i, c in T.grid(t, hidden):
            with T.sblock("take"):
                vi, vc = T.axis.remap("SS", [i, c])
                out[vi, vc] = (T.Cast("float32", T.bitwise_and(T.shift_right(
                    w[ids[vi], (vc // GROUP * chunks + vc % GROUP // span) * LANES + vc % LANES],
                    T.Cast("uint32", vc % span // LANES * bits)), T.uint32(mask))) + T.float32(off)) \
                    * s[ids[vi], vc // GROUP]

    return take_q_sym


# ---------------------------------------------------------------------------------------------
# Putting the kernels into the model

_KERNEL_NAME = re.compile(r"^dequant_(matmul|lm_head|take)_")


def _static_shape(sinfo) -> list[int]:
    return [int(d) for d in sinfo.shape.values]


def _format_of(params_sinfo: list, k: int) -> str:
    """Storage format from the packed parameters' count and shapes (see quantize._packed_params)."""
    if len(params_sinfo) == 1:
        return "f32"
    if len(params_sinfo) == 3:
        return "q4_1"
    words = _static_shape(params_sinfo[0])[-1]
    return "q4" if words * 8 == k else "q8_0"


def specialize_for_cpu(mod):
    """Replace the model's dequantizing matmul/embedding PrimFuncs by the SIMD kernels above.

    The kernels read weights in the SIMD layout, so the parameters must come through
    :func:`cpu_param_records`. Shapes and formats are read off each ``call_tir`` site.
    """
    import tvm
    from tvm import relax

    call_tir = tvm.ir.Op.get("relax.call_tir")
    found: dict[Any, Any] = {}

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and expr.op.same_as(call_tir):
            gv = expr.args[0]
            m = _KERNEL_NAME.match(gv.name_hint)
            if m is None:
                return
            args = list(expr.args[1].fields)
            params = [a.ty for a in args[1:]]
            if m.group(1) == "take":
                vocab, hidden = _static_shape(params[-1])[0], None
                out = expr.ty_args[0]
                hidden = int(out.shape.values[-1])
                fmt = _format_of(params, hidden)
                found[gv] = take_kernel(fmt, vocab, hidden)
            else:
                dims = args[0].ty.shape.values
                if len(dims) != 3:
                    raise ValueError(f"{gv.name_hint}: expected a rank-3 input")
                k = int(dims[-1])
                n = int(expr.ty_args[0].shape.values[-1])
                one_token = isinstance(dims[1], tvm.tirx.IntImm) and int(dims[1]) == 1
                found[gv] = (gemv_kernel if one_token else gemm_kernel)(_format_of(params, k), k, n)

    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    mod = mod.clone() if hasattr(mod, "clone") else tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gv, kernel in found.items():
        mod[gv] = kernel
    return mod


def library_key(config, quantization) -> str:
    """Content key of a CPU model library: model shape, quantization, kernels, ABI and TVM version."""
    import tvm

    from .model_lib import ABI_VERSION
    from .quantize import as_quantization

    blob = json.dumps({"config": config.to_dict(), "quant": as_quantization(quantization).key(),
                       "target": "wasm32-simd128", "kernels": CPU_KERNELS_VERSION, "abi": ABI_VERSION,
                       "tvm": tvm.__version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def build_cpu_library(config, quantization: Any = "q4f32_1", *, use_cache: bool = True,
                      progress: bool = True) -> Path:
    """Compile and link the model library for the page's CPU; return the path of the cached ``.wasm``.

    ``config`` is a :class:`.llama.LlamaConfig` (or an HF-style dict), ``quantization`` a mode
    name or the :class:`.quantize.Quantization` from ``ggml_quantization``. Its weights must be
    written through :func:`cpu_param_records`. Cached under ``cache_dir()/model-libs-cpu/``.
    Raises :class:`CompileError` for ``q4f16_1`` (float16 compute has no use on the CPU) and
    when TVM or the link fails.
    """
    from ..cache import atomic_write_bytes, cache_dir
    from ..errors import CompileError
    from .build import compile_module, link_executable
    from .llama import LlamaConfig
    from .model_lib import export_model
    from .quantize import as_quantization

    cfg = config if isinstance(config, LlamaConfig) else LlamaConfig.from_dict(config)
    quant = as_quantization(quantization)
    if quant.compute_dtype != "float32":
        raise CompileError(f"quantization {quant.name} computes in {quant.compute_dtype}; the CPU target "
                           "runs float32: use q4f32_1, ggml (GGUF input) or q0f32.")
    out = cache_dir() / "model-libs-cpu" / f"{library_key(cfg, quant)}.wasm"
    if use_cache and out.is_file():
        return out
    exported = export_model(cfg, quant, cpu_target())
    mod = specialize_for_cpu(exported.mod)
    ex = compile_module(mod, target=cpu_target())
    tmp = out.with_suffix(".linking.wasm")
    link_executable(ex, tmp, target="cpu", use_cache=use_cache, progress=progress)
    atomic_write_bytes(out, tmp.read_bytes())
    tmp.unlink(missing_ok=True)
    return out


# ---------------------------------------------------------------------------------------------
# Model folders for the CPU

def cpu_model_folder(model: Any = None, *, progress: bool = True, from_source: bool = True) -> Path | None:
    """The CPU build of what a user passes as ``model=`` (built once, cached), or None when there is none.

    ``None``/``"default"``: the built-in SmolLM2 built with ``device="cpu"``. A ``.gguf`` file or a Hugging
    Face folder: built for the CPU. A model folder: itself when its manifest says ``device: cpu``, else the
    CPU build of the source it was built from (``source_path`` in its manifest) when that still exists and
    ``from_source`` (``device="auto"`` passes False: a folder built for WebGPU runs where it was built for).
    Prebuilt MLC ids and URLs have no CPU build (None).
    """
    from .. import models
    from .pipeline import MANIFEST, build_model_folder

    if model is None or str(model) == "default":
        return models.default(device=DEVICE, progress=progress)
    text = str(model)
    if text.startswith(("http://", "https://")):
        return None
    p = Path(text).expanduser()
    if p.is_dir() and (p / "mlc-chat-config.json").exists():
        try:
            doc = json.loads((p / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        if doc.get("device") == DEVICE:
            return p
        src = doc.get("source_path")
        if from_source and src and Path(src).exists():
            return build_model_folder(src, quantization=doc.get("quantization"), device=DEVICE, progress=progress)
        return None
    if p.exists():
        return build_model_folder(p, device=DEVICE, progress=progress)
    return None


#: Tokens per tile in the prefill kernel: each weight word is decoded once for this many tokens.
TOKEN_TILE = 4


def gemm_kernel(fmt: str, k: int, n: int):
    """Prefill's ``y = x @ W.T`` for ``t`` tokens, tiled by :data:`TOKEN_TILE` tokens per decoded weight word.

    Same parameters as :func:`gemv_kernel` (which stays the decode kernel: no tile overhead for one token).
    A last partial tile repeats the last token (its rows are written again with the same values).
    """
    from tvm.script import tirx as T

    if fmt == "f32":
        return gemv_kernel(fmt, k, n)
    groups = k // GROUP
    bits, per_word, chunks = _layout(fmt)
    words = k // per_word
    mask = (1 << bits) - 1
    span = LANES * per_word
    tt = TOKEN_TILE
    has_min = fmt == "q4_1"
    off = -7.0 if fmt == "q4" else -128.0

    @T.macro
    def body(x, w, s, m, y, b, t):
        for bi in T.serial(b):
            with T.sblock("gemm"):
                vb = T.axis.remap("S", [bi])
                T.reads(x[vb, 0:t, 0:k], w[0:n, 0:words], s[0:n, 0:groups])
                T.writes(y[vb, 0:t, 0:n])
                xs = T.sblock_alloc_buffer((tt, groups * LANES), "float32")
                acc = T.sblock_alloc_buffer((tt, LANES), "float32")
                part = T.sblock_alloc_buffer((tt, LANES), "float32")
                wv = T.sblock_alloc_buffer((LANES,), "float32")
                for tb in T.serial((t + tt - 1) // tt):
                    for u in T.serial(tt):
                        for g in T.serial(groups):
                            for lane in T.vectorized(LANES):
                                xs[u, g * LANES + lane] = T.float32(0)
                            for j in T.serial(GROUP // LANES):
                                for lane in T.vectorized(LANES):
                                    xs[u, g * LANES + lane] = xs[u, g * LANES + lane] + x[
                                        vb, T.min(tb * tt + u, t - 1), g * GROUP + j * LANES + lane]
                    for row in T.serial(n):
                        for u in T.unroll(tt):
                            for lane in T.vectorized(LANES):
                                acc[u, lane] = T.float32(0)
                        for g in T.serial(groups):
                            for u in T.unroll(tt):
                                for lane in T.vectorized(LANES):
                                    part[u, lane] = T.float32(0)
                            for c in T.unroll(chunks):
                                for j in T.unroll(per_word):
                                    for lane in T.vectorized(LANES):
                                        wv[lane] = T.Cast("float32", T.bitwise_and(T.shift_right(
                                            w[row, (g * chunks + c) * LANES + lane], T.uint32(bits * j)),
                                            T.uint32(mask)))
                                    for u in T.unroll(tt):
                                        for lane in T.vectorized(LANES):
                                            part[u, lane] = part[u, lane] + wv[lane] * x[
                                                vb, T.min(tb * tt + u, t - 1), g * GROUP + c * span + j * LANES + lane]
                            for u in T.unroll(tt):
                                for lane in T.vectorized(LANES):
                                    if has_min:
                                        acc[u, lane] = acc[u, lane] + part[u, lane] * s[row, g] \
                                            + m[row, g] * xs[u, g * LANES + lane]
                                    else:
                                        acc[u, lane] = acc[u, lane] + (part[u, lane] + T.float32(off)
                                                                       * xs[u, g * LANES + lane]) * s[row, g]
                        for u in T.unroll(tt):
                            y[vb, T.min(tb * tt + u, t - 1), row] = acc[u, 0] + acc[u, 1] + acc[u, 2] + acc[u, 3]

    if has_min:
        @T.prim_func(private=True, s_tir=True)
        def gemm_q4_1(var_x: T.handle, w: T.Buffer((n, words), "uint32"), s: T.Buffer((n, groups), "float32"),
                      m: T.Buffer((n, groups), "float32"), var_y: T.handle):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8})
            b, t = T.int64(), T.int64()
            x = T.match_buffer(var_x, (b, t, k), "float32")
            y = T.match_buffer(var_y, (b, t, n), "float32")
            body(x, w, s, m, y, b, t)

        return gemm_q4_1

    @T.prim_func(private=True, s_tir=True)
    def gemm_q_sym(var_x: T.handle, w: T.Buffer((n, words), "uint32"), s: T.Buffer((n, groups), "float32"),
                   var_y: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8})
        b, t = T.int64(), T.int64()
        x = T.match_buffer(var_x, (b, t, k), "float32")
        y = T.match_buffer(var_y, (b, t, n), "float32")
        body(x, w, s, None, y, b, t)

    return gemm_q_sym
