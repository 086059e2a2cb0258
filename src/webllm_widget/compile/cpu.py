"""The model on the page's CPU: wasm32 + SIMD128 target, SIMD-friendly weight layout and hand-scheduled kernels.

The Llama module from :mod:`.model_lib` is exported for
``{"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm", "mattr": ["+simd128"]}``; TVM already
has CPU kernels for the paged KV cache and the sampling functions have CPU variants. What TVM
leaves naive are the dequantizing matrix-vector products, which are nearly all of decode's
work, and the dequantizing embedding lookup. This module replaces those with kernels written
for one wasm thread and 128-bit SIMD:

- **Layout.** 4-bit weights: each group of 32 elements is 16 bytes, byte ``i`` holding element ``i``
  (low nibble) and element ``16 + i`` (high nibble), so an 8-byte load widened to 16-bit lanes
  (``i16x8.load8x8_u``), one mask and one shift give 8 consecutive elements each. 8-bit weights keep
  byte ``k`` = element ``k``. Shapes are unchanged: :func:`pack_for_cpu` repacks a ``q_weight``
  record, :func:`cpu_param_records` a whole model.
- **Kernels.** Integer dot products: per tile of tokens each group of 32 activations is scaled to
  int16 (a high part and its rounding residue, ~30 bits together), and per output row and group the
  raw weight integers meet them in ``i32x4.dot_i16x8_s`` instructions (8 products each); the scale,
  the activation scale and the offset (``q_min``, or ``-7 s`` / ``-128 s``) are applied once per
  group in float. Decode (one token) uses :func:`gemv_kernel`; prefill :func:`gemm_kernel`, which
  decodes each weight group once for a tile of :data:`TOKEN_TILE` tokens. Measured on SmolLM2-135M
  decode (headless Chromium, one thread): ~22% more tokens per CPU-second than the float kernels
  they replace (per-element shift/mask/convert/multiply/add on ``f32x4``).

Example::

    from webllm_widget.compile.cpu import build_cpu_library, cpu_param_records
    path = build_cpu_library(cfg, quant)                  # linked .wasm (cached by content hash)
    for name, arr in cpu_param_records(param_records(ckpt, cfg, quant), quant): ...
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

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


def pack_for_cpu(q_weight: np.ndarray, bits: int) -> np.ndarray:
    """Repack ``q_weight`` (uint32 ``[N, W]``, element ``k`` in word ``k // e`` at bit ``bits * (k % e)``,
    ``e = 32 // bits``) into the layout the integer-dot kernels read.

    4-bit: each group of 32 elements is 16 bytes, byte ``i`` holding element ``i`` in its low nibble and
    element ``16 + i`` in its high nibble, so one 8-byte load widened to 16-bit lanes, one mask and one
    shift give 8 consecutive elements each. 8-bit: unchanged (byte ``k`` is element ``k`` already).
    Shapes are unchanged (uint32 ``[N, W]``; bytes in little-endian order, as wasm reads them).
    """
    q = np.ascontiguousarray(np.asarray(q_weight, dtype=np.uint32))
    if bits == 8:
        return q
    n, w = q.shape
    vals = ((q[..., None] >> (np.arange(8, dtype=np.uint32) * 4)) & np.uint32(15)).reshape(n, -1, 2, 16)
    packed = (vals[:, :, 0, :] | (vals[:, :, 1, :] << np.uint32(4))).astype("<u1")  # [N, groups, 16]
    return np.ascontiguousarray(packed.reshape(n, -1)).view("<u4").reshape(n, w).astype(np.uint32)


def unpack_from_cpu(q_weight: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_for_cpu`."""
    q = np.ascontiguousarray(np.asarray(q_weight, dtype=np.uint32))
    if bits == 8:
        return q
    n, w = q.shape
    b = q.astype("<u4").view(np.uint8).reshape(n, -1, 16)
    vals = np.stack([b & 15, b >> 4], axis=2).reshape(n, -1, 8).astype(np.uint32)  # element order
    return np.bitwise_or.reduce(vals << (np.arange(8, dtype=np.uint32) * 4), axis=-1).astype(np.uint32)


def cpu_param_records(records: Iterable[tuple[str, np.ndarray]]) -> Iterator[tuple[str, np.ndarray]]:
    """The model's parameter records with every ``q_weight`` repacked by :func:`pack_for_cpu`.

    ``records`` come from :func:`.params.param_records` (a ``q_weight`` is always followed by
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
            yield pname, pack_for_cpu(words, bits)
        if name.endswith(".q_weight"):
            pending = (name, arr)
            continue
        yield name, arr
    if pending is not None:
        raise ValueError(f"{pending[0]} is not followed by its q_scale")


# ---------------------------------------------------------------------------------------------
# Kernels (one wasm thread, SIMD128)

#: The 16-bit integer dot product (8 x int16 pairs -> 4 x int32 sums of adjacent products) by target:
#: wasm ``i32x4.dot_i16x8_s``; x86's ``pmaddwd`` (same semantics) for the native kernel tests.
DOT_INTRINSICS = {"wasm32": "llvm.wasm.dot", "x86_64": "llvm.x86.sse2.pmadd.wd"}


def dot_intrinsic(target=None) -> str:
    """The LLVM intrinsic for the int16 dot product on ``target`` (default: wasm32, the page's CPU)."""
    if target is None:
        return DOT_INTRINSICS["wasm32"]
    triple = str(target.attrs.get("mtriple", "")) if hasattr(target, "attrs") else str(target)
    if "wasm32" in triple:
        return DOT_INTRINSICS["wasm32"]
    import platform

    arch = triple.split("-")[0] if triple else platform.machine().lower()
    if arch in ("x86_64", "amd64"):
        return DOT_INTRINSICS["x86_64"]
    from ..errors import CompileError

    raise CompileError(f"the CPU kernels have no int16 dot product for {arch or triple!r}; "
                       "they target wasm32 + SIMD128 (and x86-64 for native tests)")


def _layout(fmt: str) -> tuple[int, int, int]:
    """(bits, elements per word, 16-element-or-more chunks per group of 32) of a quantized format."""
    bits = _bits(fmt)
    per_word = 32 // bits
    return bits, per_word, GROUP // (LANES * per_word)


def gemv_kernel(fmt: str, k: int, n: int, dot: str | None = None):
    """Decode's ``y[b, t, :] = x[b, t, :] @ W.T`` for W ``[n, k]`` stored in ``fmt``, as a TIR PrimFunc.

    Parameters, in the order the model's ``call_tir`` passes them: ``x`` ``[b, t, k]`` float32, the
    packed weight (``weight`` for ``f32``; ``q_weight``, ``q_scale``[, ``q_min``] otherwise), ``y``.
    Quantized formats go through :func:`qmatmul_kernel` (one token per tile).
    """
    from tvm.script import tirx as T

    if k % GROUP:
        raise ValueError(f"input features {k} is not a multiple of {GROUP}")
    if fmt != "f32":
        return qmatmul_kernel(fmt, k, n, tile=1, dot=dot)

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


#: Largest magnitude of the 16-bit activations: |w| <= 255 times this, twice per lane, four dots per
#: group stays far inside int32.
XQ_MAX = 32767.0
#: The activations' rounding residue (|r| <= 0.5) is kept as a second int16 scaled by this: high + low
#: parts carry ~30 bits, so the integer products lose nothing a float32 product would keep.
LO_SCALE = 32768.0


def qmatmul_kernel(fmt: str, k: int, n: int, tile: int = 1, dot: str | None = None):
    """``y = x @ W.T`` for quantized W (layout of :func:`pack_for_cpu`) with 16-bit integer dot products.

    Per tile of ``tile`` tokens, each group of 32 activations is scaled by ``32767 / amax`` and split into
    two int16 parts, the rounded value and its rounding residue times :data:`LO_SCALE` (~30 bits together:
    as exact as float32), keeping the group's sum for the offset term. Per output row and group the raw
    weight integers (widened to int16 by the load, unpacked once) meet each part in four ``dot``
    instructions of 8 pairs each; ``scale * x_scale`` is applied once per group in float, the offset
    (``q_min``, ``-7 s`` or ``-128 s``) against the group's activation sum. Weights are decoded once per tile of tokens,
    so prefill uses ``tile`` > 1 (a last partial tile repeats the last token: same values rewritten).
    """
    from tvm.script import tirx as T

    if k % GROUP:
        raise ValueError(f"input features {k} is not a multiple of {GROUP}")
    intrin = dot or dot_intrinsic()
    bits = _bits(fmt)
    groups = k // GROUP
    words = k * bits // 32
    gbytes = GROUP * bits // 8  # bytes per group in the weight row
    rowbytes = k * bits // 8
    tt = tile
    has_min = fmt == "q4_1"
    off = -7.0 if fmt == "q4" else -128.0
    four = bits == 4

    def dot4(wv, xq, u, part, g):
        """Sum of the 4 dot instructions of one group: 32 weights against 32 activations (one 15-bit part)."""
        return (T.call_llvm_pure_intrin("int32x4", intrin, wv[0, T.Ramp(0, 1, 8)], xq[u, part, T.Ramp(g * GROUP, 1, 8)])
                + T.call_llvm_pure_intrin("int32x4", intrin, wv[1, T.Ramp(0, 1, 8)],
                                          xq[u, part, T.Ramp(g * GROUP + 8, 1, 8)])
                + T.call_llvm_pure_intrin("int32x4", intrin, wv[2, T.Ramp(0, 1, 8)],
                                          xq[u, part, T.Ramp(g * GROUP + 16, 1, 8)])
                + T.call_llvm_pure_intrin("int32x4", intrin, wv[3, T.Ramp(0, 1, 8)],
                                          xq[u, part, T.Ramp(g * GROUP + 24, 1, 8)]))

    @T.macro
    def body(x, w, s, m, y, b, t):
        for bi in T.serial(b):
            with T.sblock("qmatmul"):
                vb = T.axis.remap("S", [bi])
                T.reads(x[vb, 0:t, 0:k], w[0:n, 0:words], s[0:n, 0:groups])
                T.writes(y[vb, 0:t, 0:n])
                w8 = T.decl_buffer((n * rowbytes,), "uint8", data=w.data)
                xq = T.sblock_alloc_buffer((tt, 2, k), "int16")  # activations: high and low 15 bits
                xd = T.sblock_alloc_buffer((tt, groups), "float32")  # activation scale per group
                xsum = T.sblock_alloc_buffer((tt, groups), "float32")  # sum of the quantized activations
                red = T.sblock_alloc_buffer((3,), "float32")
                acc = T.sblock_alloc_buffer((tt, LANES), "float32")
                tail = T.sblock_alloc_buffer((tt,), "float32")
                wv = T.sblock_alloc_buffer((4, 8), "int16")
                for tb in T.serial((t + tt - 1) // tt):
                    for u, g in T.grid(tt, groups):
                        red[0] = T.float32(0)
                        for i in T.serial(GROUP):
                            red[0] = T.max(red[0], T.fabs(x[vb, T.min(tb * tt + u, t - 1), g * GROUP + i]))
                        xd[u, g] = red[0] / T.float32(XQ_MAX)
                        red[1] = T.Select(red[0] > T.float32(0), T.float32(XQ_MAX) / red[0], T.float32(0))
                        red[0] = T.float32(0)
                        for i in T.serial(GROUP):
                            red[2] = x[vb, T.min(tb * tt + u, t - 1), g * GROUP + i] * red[1]
                            xq[u, 0, g * GROUP + i] = T.Cast("int16", T.round(red[2]))
                            xq[u, 1, g * GROUP + i] = T.Cast("int16", T.round(
                                (red[2] - T.Cast("float32", xq[u, 0, g * GROUP + i])) * T.float32(LO_SCALE)))
                            red[0] = red[0] + T.Cast("float32", xq[u, 0, g * GROUP + i]) \
                                + T.Cast("float32", xq[u, 1, g * GROUP + i]) * T.float32(1.0 / LO_SCALE)
                        xsum[u, g] = red[0] * xd[u, g]
                    for row in T.serial(n):
                        for u in T.unroll(tt):
                            acc[u, T.Ramp(0, 1, LANES)] = T.Broadcast(T.float32(0), LANES)
                            tail[u] = T.float32(0)
                        for g in T.serial(groups):
                            if four:
                                lo = T.Cast("int16x8", w8[T.Ramp(row * rowbytes + g * gbytes, 1, 8)])
                                hi = T.Cast("int16x8", w8[T.Ramp(row * rowbytes + g * gbytes + 8, 1, 8)])
                                wv[0, T.Ramp(0, 1, 8)] = T.bitwise_and(lo, T.Broadcast(T.int16(15), 8))
                                wv[1, T.Ramp(0, 1, 8)] = T.bitwise_and(hi, T.Broadcast(T.int16(15), 8))
                                wv[2, T.Ramp(0, 1, 8)] = T.shift_right(lo, T.Broadcast(T.int16(4), 8))
                                wv[3, T.Ramp(0, 1, 8)] = T.shift_right(hi, T.Broadcast(T.int16(4), 8))
                            else:
                                for c in T.unroll(4):
                                    wv[c, T.Ramp(0, 1, 8)] = T.Cast(
                                        "int16x8", w8[T.Ramp(row * rowbytes + g * gbytes + c * 8, 1, 8)])
                            for u in T.unroll(tt):
                                acc[u, T.Ramp(0, 1, LANES)] = acc[u, T.Ramp(0, 1, LANES)] + (
                                    T.Cast("float32x4", dot4(wv, xq, u, 0, g)) + T.Cast("float32x4", dot4(wv, xq, u, 1, g))
                                    * T.Broadcast(T.float32(1.0 / LO_SCALE), LANES)
                                ) * T.Broadcast(s[row, g] * xd[u, g], LANES)
                                if has_min:
                                    tail[u] = tail[u] + m[row, g] * xsum[u, g]
                                else:
                                    tail[u] = tail[u] + s[row, g] * T.float32(off) * xsum[u, g]
                        for u in T.unroll(tt):
                            y[vb, T.min(tb * tt + u, t - 1), row] = (acc[u, 0] + acc[u, 1] + acc[u, 2] + acc[u, 3]
                                                                    + tail[u])

    if has_min:
        @T.prim_func(private=True, s_tir=True)
        def qmatmul_q4_1(var_x: T.handle, w: T.Buffer((n, words), "uint32"), s: T.Buffer((n, groups), "float32"),
                         m: T.Buffer((n, groups), "float32"), var_y: T.handle):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8})
            b, t = T.int64(), T.int64()
            x = T.match_buffer(var_x, (b, t, k), "float32")
            y = T.match_buffer(var_y, (b, t, n), "float32")
            body(x, w, s, m, y, b, t)

        return qmatmul_q4_1

    @T.prim_func(private=True, s_tir=True)
    def qmatmul_sym(var_x: T.handle, w: T.Buffer((n, words), "uint32"), s: T.Buffer((n, groups), "float32"),
                    var_y: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8})
        b, t = T.int64(), T.int64()
        x = T.match_buffer(var_x, (b, t, k), "float32")
        y = T.match_buffer(var_y, (b, t, n), "float32")
        body(x, w, s, None, y, b, t)

    return qmatmul_sym


def take_kernel(fmt: str, vocab: int, hidden: int):
    """Embedding lookup ``out[i, :] = W[ids[i], :]`` dequantized from ``fmt`` (layout of :func:`pack_for_cpu`)."""
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

    bits, per_word, _ = _layout(fmt)
    words = hidden // per_word
    groups = hidden // GROUP
    mask = (1 << bits) - 1
    off = -7.0 if fmt == "q4" else -128.0

    # Where element c sits in the layout of pack_for_cpu: 8-bit, byte c; 4-bit, byte 16 g + c % 16 of its
    # group g, low nibble for the group's first 16 elements, high nibble for the next 16.
    def word(c):
        return c // 4 if bits == 8 else c // GROUP * 4 + c % 16 // 4

    def shift(c):
        return T.Cast("uint32", c % 4 * 8 if bits == 8 else c % 4 * 8 + c % GROUP // 16 * 4)

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
                        w[ids[vi], word(vc)], shift(vc)), T.uint32(mask))) * s[ids[vi], vc // GROUP] \
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
                    w[ids[vi], word(vc)], shift(vc)), T.uint32(mask))) + T.float32(off)) \
                    * s[ids[vi], vc // GROUP]

    return take_q_sym


# ---------------------------------------------------------------------------------------------
# Putting the kernels into the model

_KERNEL_NAME = re.compile(r"^dequant_(matmul|lm_head|take)_")


def _static_shape(sinfo) -> list[int]:
    return [int(d) for d in sinfo.shape.values]


def _format_of(params_sinfo: list, k: int) -> str:
    """Storage format from the packed parameters' count and shapes (see quant.nn._packed_params)."""
    if len(params_sinfo) == 1:
        return "f32"
    if len(params_sinfo) == 3:
        return "q4_1"
    words = _static_shape(params_sinfo[0])[-1]
    return "q4" if words * 8 == k else "q8_0"


def specialize_for_cpu(mod, target=None):
    """Replace the model's dequantizing matmul/embedding PrimFuncs by the SIMD kernels above.

    The kernels read weights in the layout of :func:`pack_for_cpu`, so the parameters must come through
    :func:`cpu_param_records`. Shapes and formats are read off each ``call_tir`` site. ``target`` picks the
    integer dot instruction (:func:`dot_intrinsic`): the page's wasm32 by default, x86-64 for native tests.
    """
    dot = dot_intrinsic(target)
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
                found[gv] = (gemv_kernel(_format_of(params, k), k, n, dot) if one_token
                             else gemm_kernel(_format_of(params, k), k, n, dot))

    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    mod = mod.clone() if hasattr(mod, "clone") else tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gv, kernel in found.items():
        mod[gv] = kernel
    return mod


def library_key(config, quantization) -> str:
    """Content key of a CPU model library: model shape, quantization, kernels, ABI and TVM version (:mod:`.keys`)."""
    from .keys import cpu_library_key

    return cpu_library_key(config, quantization)


def build_cpu_library(config, quantization: Any = "q4f32_1", *, use_cache: bool = True,
                      progress: bool = True) -> Path:
    """Compile and link the model library for the page's CPU; return the path of the cached ``.wasm``.

    ``config`` is a family's config (e.g. :class:`.arch.llama.config.LlamaConfig`, or an HF-style dict),
    ``quantization`` a mode name or the :class:`.quant.modes.Quantization` from ``ggml_quantization``.
    Its weights must be written through :func:`cpu_param_records`. Cached under ``cache_dir()/model-libs-cpu/``.
    Raises :class:`CompileError` for ``q4f16_1`` (float16 compute has no use on the CPU) and
    when TVM or the link fails.
    """
    from ..cache import atomic_write_bytes, cache_dir
    from ..errors import CompileError
    from .build import compile_module, link_executable
    from .arch import registry
    from .model_lib import export_model
    from .quant.modes import as_quantization

    cfg = registry.config_from_dict(config)
    quant = as_quantization(quantization)
    if quant.compute_dtype != "float32":
        raise CompileError(f"quantization {quant.name} computes in {quant.compute_dtype}; the CPU target "
                           "runs float32: use q4f32_1, ggml (GGUF input) or q0f32.")
    out = cache_dir() / "model-libs-cpu" / f"{library_key(cfg, quant)}.wasm"
    if use_cache and out.is_file():
        return out
    exported = export_model(cfg, quant, cpu_target())
    mod = specialize_for_cpu(exported.mod, cpu_target())
    ex = compile_module(mod, target=cpu_target())
    tmp = out.with_suffix(".linking.wasm")
    link_executable(ex, tmp, target="cpu", use_cache=use_cache, progress=progress)
    atomic_write_bytes(out, tmp.read_bytes())
    tmp.unlink(missing_ok=True)
    return out


#: Tokens per tile in the prefill kernel: each weight word is decoded once for this many tokens.
TOKEN_TILE = 4


def gemm_kernel(fmt: str, k: int, n: int, dot: str | None = None):
    """Prefill's ``y = x @ W.T`` for ``t`` tokens: :func:`qmatmul_kernel` with :data:`TOKEN_TILE` tokens per
    decoded weight group (``f32`` weights: the decode kernel, token by token)."""
    if fmt == "f32":
        return gemv_kernel(fmt, k, n)
    return qmatmul_kernel(fmt, k, n, tile=TOKEN_TILE, dot=dot)
