"""The model on the page's CPU: wasm32 SIMD targets (SIMD128, relaxed SIMD), SIMD-friendly weight layout and
hand-scheduled integer-dot kernels.

The Llama module from :mod:`.model_lib` is exported for
``{"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm", "mattr": ["+simd128"]}`` (and a second build with
``"+relaxed-simd"``); TVM already has CPU kernels for the paged KV cache and the sampling functions have CPU
variants. What TVM leaves naive are the dequantizing matrix-vector products, which are nearly all of decode's
work, and the dequantizing embedding lookup. This module replaces those with kernels written in TIR for one wasm
thread and 128-bit SIMD (the dot-product instructions through ``T.call_llvm_pure_intrin``, so TVM generates them;
no hand-written wasm is needed):

- **Layout.** 4-bit weights: each group of 32 elements is 16 bytes, byte ``i`` holding element ``i``
  (low nibble) and element ``16 + i`` (high nibble), so one mask and one shift of a 16-byte load give elements
  0-15 and 16-31 as bytes (relaxed build), or of an 8-byte load widened to 16-bit lanes (``i16x8.load8x8_u``)
  8 consecutive elements each (SIMD128 build). 8-bit weights keep byte ``k`` = element ``k``. Shapes are
  unchanged: :func:`pack_for_cpu` repacks a ``q_weight`` record, :func:`cpu_param_records` a whole model. Both
  builds read the same weights.
- **Kernels.** llama.cpp's approach: per tile of tokens each group of 32 activations is rounded once to integers
  with one scale (:func:`quantize_activations`), and per output row and group the raw weight integers meet them
  in integer dot products; the weight scale times the activation scale, and the offset (``q_min``, or
  ``-7 s`` / ``-128 s``) against the group's activation sum, are applied once per group in float. The relaxed
  build (:data:`ISAS`) feeds 4-bit weights as the 7-bit operand of ``i32x4.relaxed_dot_i8x16_i7x16_add_s``
  and activation bytes (16 products an instruction; a value byte and a residue byte, see :data:`XQ_MAX`); the
  SIMD128 build, and 8-bit weights in both, use ``i32x4.dot_i16x8_s`` with 16-bit activations (8 products; as
  fast as 8-bit ones there: :func:`activation_bits`). Both keep logits within ~0.005 of float. Every product
  computes :data:`ROWS` output rows a step, one per lane, from weights stored 4 rows 32-bit word by word (one
  stream of bytes and one of scales), which lets every dot product's lanes be the 4 rows (:func:`qmatmul_kernel`:
  no reduction across lanes); decode (one token) uses :func:`gemv_kernel`, prefill :func:`gemm_kernel`, which
  decodes each weight group once for a tile of :data:`TOKEN_TILE` tokens. Variants of the relaxed build's 4-bit
  products that no model folder carries (:data:`RELAXED_DOTS`' ``"i16x8"`` 16-bit sums; single-byte ``int8``
  activations) are built by :func:`build_cpu_library_variant` for ``bench/cpu_variants.py``. Measured there
  (Chromium 156, x86-64): every form with ~15-bit activations runs at 0.8-1.1x the SIMD128 build, whether V8
  emits one ``vpdpbusd`` per 16 byte products (AVX-VNNI), ``pmaddubsw`` + ``paddw`` (16-bit sums) or ``pmaddwd``
  + ``paddd`` per 8 (SIMD128), and the ``"i32x4"`` chains fall to ~0.6x prefill without AVX-VNNI: each form needs
  one multiply instruction per 8 weight-activation products. Only single bytes (16 a multiply) are faster
  (~1.5-2x prefill), at llama.cpp's precision, which changes the built-in model's greedy answer.
- **Which build runs.** A CPU model folder holds both libraries (:data:`LIBRARY_FILES`); the page runs the one
  ``PREFERRED_CPU_BUILD`` names where it validates (SIMD128: measured faster than the relaxed build on x86 without
  AVX-VNNI by ``bench/cpu.py``, as fast with it), the SIMD128 one elsewhere, and says which (``js/src/engine/cpu/features.ts``).

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


def cpu_target(isa: str = "simd128"):
    """``tvm.target.Target`` for wasm32 with SIMD128, plus relaxed SIMD for ``isa="relaxed-simd"`` (host and
    device are the same)."""
    import tvm

    mattr = ["+simd128", "+relaxed-simd"] if _check_isa(isa) == "relaxed-simd" else ["+simd128"]
    t = {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm", "mattr": mattr}
    return tvm.target.Target(t, host=t)


# ---------------------------------------------------------------------------------------------
# Weight layout

def _bits(fmt: str) -> int:
    return 8 if fmt == "q8_0" else 4


#: Rows whose 32-bit words are stored side by side (:func:`pack_for_cpu`): the kernels compute this many output rows
#: at once, one per lane of a 4-lane vector.
BLOCK_ROWS = 4


def interleaved(n: int) -> bool:
    """Whether a matrix of ``n`` rows is stored in blocks of :data:`BLOCK_ROWS` interleaved rows (``n`` a multiple of
    it; otherwise its rows stay one after another)."""
    return n % BLOCK_ROWS == 0


def _interleave(a: np.ndarray, groups: int, undo: bool = False) -> np.ndarray:
    """``[n, groups * e]`` -> the same shape with each block of 4 rows stored group by group: row ``4 b + r``'s group
    ``g`` at ``[b, g, r]`` of a ``[n / 4, groups, 4, e]`` array (``groups`` = the row's width: element by element);
    with ``undo``, the inverse."""
    n, w = a.shape
    if not interleaved(n):
        return np.ascontiguousarray(a)
    e = w // groups
    blocks = (groups, BLOCK_ROWS) if undo else (BLOCK_ROWS, groups)
    return np.ascontiguousarray(a.reshape(n // BLOCK_ROWS, *blocks, e).swapaxes(1, 2)).reshape(n, w)


def _deinterleave(a: np.ndarray, groups: int) -> np.ndarray:
    return _interleave(a, groups, undo=True)


def pack_for_cpu(q_weight: np.ndarray, bits: int) -> np.ndarray:
    """Repack ``q_weight`` (uint32 ``[N, W]``, element ``k`` in word ``k // e`` at bit ``bits * (k % e)``,
    ``e = 32 // bits``) into the layout the integer-dot kernels read.

    Within a group: 4-bit, each group of 32 elements is 16 bytes, byte ``i`` holding element ``i`` in its low nibble
    and element ``16 + i`` in its high nibble, so one 8-byte load widened to 16-bit lanes, one mask and one shift
    give 8 consecutive elements each; 8-bit, unchanged (byte ``k`` is element ``k``). Rows: where ``N`` is a multiple
    of :data:`BLOCK_ROWS` (:func:`interleaved`), each block of 4 rows is stored 32-bit word by word (the 4 rows' word
    0, then their word 1, ...), so the kernels, which compute 4 rows at once, read one stream of bytes in order, and
    each 16 bytes hold the same 4 (at 4 bits, 8) elements of the 4 rows: a dot product's lanes are rows
    (:func:`qmatmul_kernel`). Shapes are unchanged (uint32 ``[N, W]``; bytes in little-endian order, as wasm reads
    them).
    """
    q = np.ascontiguousarray(np.asarray(q_weight, dtype=np.uint32))
    n, w = q.shape
    if bits == 8:
        return _interleave(q, w)
    vals = ((q[..., None] >> (np.arange(8, dtype=np.uint32) * 4)) & np.uint32(15)).reshape(n, -1, 2, 16)
    packed = (vals[:, :, 0, :] | (vals[:, :, 1, :] << np.uint32(4))).astype("<u1")  # [N, groups, 16]
    words = np.ascontiguousarray(packed.reshape(n, -1)).view("<u4").reshape(n, w).astype(np.uint32)
    return _interleave(words, w)


def unpack_from_cpu(q_weight: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_for_cpu`."""
    q = np.ascontiguousarray(np.asarray(q_weight, dtype=np.uint32))
    n, w = q.shape
    q = _deinterleave(q, w)
    if bits == 8:
        return q
    b = q.astype("<u4").view(np.uint8).reshape(n, -1, 16)
    vals = np.stack([b & 15, b >> 4], axis=2).reshape(n, -1, 8).astype(np.uint32)  # element order
    return np.bitwise_or.reduce(vals << (np.arange(8, dtype=np.uint32) * 4), axis=-1).astype(np.uint32)


def pack_scales_for_cpu(a: np.ndarray) -> np.ndarray:
    """A ``q_scale`` / ``q_min`` array ``[N, groups]`` in the row order of :func:`pack_for_cpu`: for each block of
    4 rows, group by group, the 4 rows' values side by side (one 4-lane load)."""
    a = np.asarray(a)
    return _interleave(a, a.shape[-1])


def unpack_scales_from_cpu(a: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_scales_for_cpu`."""
    a = np.asarray(a)
    return _deinterleave(a, a.shape[-1])


def cpu_param_records(records: Iterable[tuple[str, np.ndarray]]) -> Iterator[tuple[str, np.ndarray]]:
    """The model's parameter records with every ``q_weight`` repacked by :func:`pack_for_cpu` and its ``q_scale``
    (and ``q_min``) by :func:`pack_scales_for_cpu`.

    ``records`` come from :func:`.params.param_records` (a ``q_weight`` is always followed by
    its ``q_scale``, then a ``q_min`` where the format has one). The width of the pair tells the format: a row of
    ``K`` elements has ``K / 32`` scales and ``K / 8`` words at 4 bits or ``K / 4`` words at 8 bits.
    """
    pending: tuple[str, np.ndarray] | None = None
    prefix = None
    for name, arr in records:
        if pending is not None:
            pname, words = pending
            pending = None
            if name != pname[: -len("q_weight")] + "q_scale":
                raise ValueError(f"{pname} is not followed by its q_scale (got {name})")
            bits = 4 if words.shape[-1] * 8 == arr.shape[-1] * GROUP else 8
            yield pname, pack_for_cpu(words, bits)
            yield name, pack_scales_for_cpu(arr)
            prefix = pname[: -len("q_weight")]
            continue
        if name.endswith(".q_weight"):
            pending = (name, arr)
            continue
        if prefix is not None and name == prefix + "q_min":
            yield name, pack_scales_for_cpu(arr)
            continue
        prefix = None
        yield name, arr
    if pending is not None:
        raise ValueError(f"{pending[0]} is not followed by its q_scale")


# ---------------------------------------------------------------------------------------------
# Kernels (one wasm thread, SIMD128)

#: Instruction sets the CPU library is built for: ``simd128`` (every browser with wasm SIMD) and
#: ``relaxed-simd`` (adds ``i32x4.relaxed_dot_i8x16_i7x16_add_s``, 16 byte products per instruction; Chrome 114+,
#: Firefox 145+). The page runs the build ``PREFERRED_CPU_BUILD`` (js/src/engine/cpu/features.ts) names.
ISAS = ("simd128", "relaxed-simd")
#: The library file of each build in a CPU model folder (``model.wasm`` runs everywhere wasm SIMD does).
LIBRARY_FILES = {"simd128": "model.wasm", "relaxed-simd": "model-relaxed-simd.wasm"}

#: The 16-bit integer dot product (8 x int16 pairs -> 4 x int32 sums of adjacent products) by architecture:
#: wasm ``i32x4.dot_i16x8_s``; x86's ``pmaddwd`` (same semantics) for the native kernel tests.
DOT_INTRINSICS = {"wasm32": "llvm.wasm.dot", "x86_64": "llvm.x86.sse2.pmadd.wd"}
#: wasm's 8-bit dot product with accumulate (relaxed SIMD): signed bytes times 7-bit bytes, 4 products per lane.
RELAXED_DOT = "llvm.wasm.relaxed.dot.i8x16.i7x16.add.signed"
#: wasm's 8-bit dot product without accumulate (relaxed SIMD, ``i16x8.relaxed_dot_i8x16_i7x16_s``): signed bytes
#: times 7-bit bytes, 2 adjacent products summed per 16-bit lane.
RELAXED_DOT16 = "llvm.wasm.relaxed.dot.i8x16.i7x16.signed"
#: x86's unsigned-by-signed byte product with pairwise add into 16-bit lanes (``pmaddubsw``: the same arithmetic as
#: RELAXED_DOT16 for 7-bit second operands; the native stand-in for both relaxed dots in tests).
X86_BYTE_DOT = "llvm.x86.ssse3.pmadd.ub.sw.128"
#: How the relaxed build's byte dot products add up (:func:`qmatmul_kernel`), as V8 lowers them:
#: ``"i32x4"`` chains ``i32x4.relaxed_dot_i8x16_i7x16_add_s`` (one ``vpdpbusd`` on x86 with AVX-VNNI, one ``sdot``
#: on ARM with the dot-product extension; ``pmaddubsw`` + ``pmaddwd`` + ``paddd`` on x86 without AVX-VNNI);
#: ``"i16x8"`` adds ``i16x8.relaxed_dot_i8x16_i7x16_s`` results as 16-bit sums (:data:`I16_SUMS` of them) and widens
#: them once per group (``pmaddubsw`` + ``paddw`` on every x86, one ``pmaddwd`` a group; ``smull`` + ``smull2`` +
#: ``addp`` + ``add`` on ARM). The library builds use ``"i32x4"``; ``bench/cpu_variants.py`` measures the other.
RELAXED_DOTS = ("i32x4", "i16x8")
#: 16-bit sums of byte dots added before one widening (``"i16x8"``): a lane of one byte dot is ``a0 w0 + a1 w1``
#: with ``|a| <= 127`` (value and residue bytes alike, :func:`quantize_activations`) and ``0 <= w <= 15`` (4-bit
#: weights), so at most ``2 * 127 * 15 = 3810``; 8 of them at most 30480 <= 32767, and a group of 32 weights of four
#: interleaved rows is exactly 8 byte dots.
I16_SUMS = 8


def _arch(target=None) -> str:
    """``"wasm32"`` or ``"x86_64"``: whose dot instructions the kernels call (default: the page's wasm32)."""
    if target is None:
        return "wasm32"
    triple = str(target.attrs.get("mtriple", "")) if hasattr(target, "attrs") else str(target)
    if "wasm32" in triple:
        return "wasm32"
    import platform

    arch = triple.split("-")[0] if triple else platform.machine().lower()
    if arch in ("x86_64", "amd64"):
        return "x86_64"
    from ..errors import CompileError

    raise CompileError(f"the CPU kernels have no integer dot product for {arch or triple!r}; "
                       "they target wasm32 + SIMD128 (and x86-64 for native tests)")


def dot_intrinsic(target=None) -> str:
    """The LLVM intrinsic for the int16 dot product on ``target`` (default: wasm32, the page's CPU)."""
    return DOT_INTRINSICS[_arch(target)]


def _check_isa(isa: str) -> str:
    if isa not in ISAS:
        raise ValueError(f"CPU instruction set {isa!r} is not one of {', '.join(ISAS)}")
    return isa


def _layout(fmt: str) -> tuple[int, int, int]:
    """(bits, elements per word, 16-element-or-more chunks per group of 32) of a quantized format."""
    bits = _bits(fmt)
    per_word = 32 // bits
    return bits, per_word, GROUP // (LANES * per_word)


def gemv_kernel(fmt: str, k: int, n: int, isa: str = "simd128", arch: str = "wasm32", **variant):
    """Decode's ``y[b, t, :] = x[b, t, :] @ W.T`` for W ``[n, k]`` stored in ``fmt``, as a TIR PrimFunc.

    Parameters, in the order the model's ``call_tir`` passes them: ``x`` ``[b, t, k]`` float32, the
    packed weight (``weight`` for ``f32``; ``q_weight``, ``q_scale``[, ``q_min``] otherwise), ``y``.
    Quantized formats go through :func:`qmatmul_kernel` (one token per tile).
    """
    from tvm.script import tirx as T

    if k % GROUP:
        raise ValueError(f"input features {k} is not a multiple of {GROUP}")
    if fmt != "f32":
        return qmatmul_kernel(fmt, k, n, tile=1, isa=isa, arch=arch, **variant)

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


#: Activations are rounded per group of 32 to signed integers with one scale before the integer dot products, as
#: llama.cpp does: ``d = amax / top``, ``v = x * (top / amax)``, ``q = round(v)`` (ties to even), ``x ~ d * q``.
#: Two forms: ``"int16"`` (``top`` 32767) where the instruction takes int16 lanes (``i32x4.dot_i16x8_s``: the
#: SIMD128 build, and 8-bit weights in both builds); ``"int8x2"`` where it takes bytes (relaxed SIMD, 4-bit
#: weights): ``top`` 127 and a second byte for the rounding residue, ``r = round((v - q) * LO_SCALE)``, so
#: ``x ~ d * (q + r / LO_SCALE)``. A single byte (llama.cpp's q8 blocks) moves SmolLM2's logits by up to ~1.2 and
#: turns the built-in model's greedy answer to "What is the capital of France?" from "The capital of France is
#: Paris." into "L'Étoile, la Mar..." (llama.cpp's own answer on one thread); the residue byte keeps ~15 bits, as
#: close to float as int16 (logits within ~0.005), for two more byte dot products per group.
ACTIVATIONS = ("int16", "int8x2", "int8")
XQ_MAX = {"int16": 32767.0, "int8x2": 127.0, "int8": 127.0}
LO_SCALE = 254.0


def activation_bits(fmt: str, isa: str) -> str:
    """The activation form (:data:`ACTIVATIONS`) a product of ``fmt`` weights uses in the ``isa`` build."""
    return "int8x2" if _check_isa(isa) == "relaxed-simd" and _bits(fmt) == 4 else "int16"


def quantize_activations(x: np.ndarray, form: str = "int16") -> tuple[np.ndarray, np.ndarray]:
    """The activations' integer blocks the kernels compute with, as ``(q int32 [..., k], d float32 [..., k // 32])``
    with ``x ~ d * q`` (``int8x2``: ``q = hi * LO_SCALE + lo`` and ``d`` divided by LO_SCALE).

    Written from the same rule as the kernels (float32 throughout), for references and tests.
    """
    top = np.float32(XQ_MAX[form])
    x = np.asarray(x, dtype=np.float32)
    g = x.reshape(*x.shape[:-1], -1, GROUP)
    amax = np.abs(g).max(axis=-1)
    inv = np.where(amax > 0, top / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    v = (g * inv[..., None]).astype(np.float32)
    q = np.rint(v)
    d = (amax / top).astype(np.float32)
    if form == "int8x2":
        lo = np.rint((v - q).astype(np.float32) * np.float32(LO_SCALE))
        q = q * LO_SCALE + lo
        d = (d / np.float32(LO_SCALE)).astype(np.float32)
    return q.astype(np.int32).reshape(x.shape), d


#: Output rows every product kernel computes per step, one per lane: their per-group integer sums are one vector (the
#: dot products' lanes where the rows are interleaved, :func:`_reduce4` otherwise), so the scales and offsets of four
#: rows are applied in one vector step.
ROWS = BLOCK_ROWS
#: Lanes of the float vectors the products accumulate in (four rows).
VEC = 4


def _reduce4(T, a, b, c, d):
    """The horizontal sums of four int32x4 vectors as one int32x4 (lane ``i`` = sum of the ``i``-th argument):
    two interleave-and-add steps (``i32x4`` unpack shuffles, which V8 lowers to single x86 instructions)."""
    ab = T.Shuffle([a, b], [0, 4, 1, 5]) + T.Shuffle([a, b], [2, 6, 3, 7])
    cd = T.Shuffle([c, d], [0, 4, 1, 5]) + T.Shuffle([c, d], [2, 6, 3, 7])
    return T.Shuffle([ab, cd], [0, 1, 4, 5]) + T.Shuffle([ab, cd], [2, 3, 6, 7])


def qmatmul_kernel(fmt: str, k: int, n: int, tile: int = 1, isa: str = "simd128", arch: str = "wasm32",
                   act: str | None = None, dot: str = "i32x4"):
    """``y = x @ W.T`` for quantized W (layout of :func:`pack_for_cpu`) with integer activations and integer dots.

    Per tile of ``tile`` tokens, each group of 32 activations becomes integers and a scale
    (:func:`quantize_activations`), keeping the group's sum for the offset term. Per output row and group the raw
    weight integers meet them in integer dot products. Where the rows are interleaved (:func:`pack_for_cpu`) each
    dot's four lanes are the block's four rows (``quads4``: each weight load is 4 bytes of each row, the activations
    splat across the vector); otherwise each row's dot is an int32x4 of partial sums and four of them are reduced
    into one vector (:func:`_reduce4`). The sums are converted to float and scaled by ``scale * x_scale`` in one
    step, and the offset (``q_min``, or ``-7 s`` / ``-128 s``) against the group's activation sum is added the same
    way. The four lanes are :data:`ROWS` output rows (a last partial block of rows, where ``n`` is not a multiple of
    4, repeats the last row); their scales and offsets are one 4-lane load where the rows are interleaved. Each
    weight group is decoded once for the whole tile of ``tile`` tokens (one accumulator vector per token; a last
    partial tile repeats the last token, the same values rewritten).

    ``isa="simd128"``: 16-bit activations and weights as int16 lanes, ``i32x4.dot_i16x8_s`` (8 products each).
    ``isa="relaxed-simd"``: 4-bit weights are 7-bit operands as they stand, so with activation bytes one
    ``i32x4.relaxed_dot_i8x16_i7x16_add_s`` does 16 products (twice: value and residue byte, ``int8x2``); 8-bit
    weights (0..255 stored) are not 7-bit, and take the int16 path (:func:`activation_bits`). ``arch="x86_64"``
    builds the same arithmetic from x86 instructions for native tests.

    Variants of the relaxed build's 4-bit products (:func:`build_cpu_library_variant`): ``dot="i16x8"`` adds the
    group's ``i16x8.relaxed_dot_i8x16_i7x16_s`` results as 16-bit sums (lanes ``2r``, ``2r + 1`` of row ``r``;
    :data:`I16_SUMS` bounds them) and widens each part once with ``i32x4.dot_i16x8_s`` against ``LO_SCALE`` or 1:
    the same integer sums as the default ``"i32x4"`` chains. ``act`` overrides :func:`activation_bits`'s form:
    ``"int8"`` drops the residue byte (half the byte dots, llama.cpp's rounding, other logits).
    """
    from tvm.script import tirx as T

    if k % GROUP:
        raise ValueError(f"input features {k} is not a multiple of {GROUP}")
    if tile != 1 and tile % VEC:
        raise ValueError(f"a prefill tile of {tile} tokens is not a multiple of {VEC}")
    _check_isa(isa)
    idot_name = DOT_INTRINSICS[arch]
    bits = _bits(fmt)
    groups = k // GROUP
    words = k * bits // 32
    gbytes = GROUP * bits // 8  # bytes per group in the weight row
    rowbytes = k * bits // 8
    tt = tile
    has_min = fmt == "q4_1"
    off = -7.0 if fmt == "q4" else -128.0
    four = bits == 4
    form = act or activation_bits(fmt, isa)
    if form not in ACTIVATIONS or (form != "int16" and (isa != "relaxed-simd" or not four)):
        raise ValueError(f"activations {form!r} with {fmt} weights in the {isa} build: byte activations need "
                         "relaxed SIMD and 4-bit weights")
    act8 = form != "int16"  # bytes into the relaxed byte dots; otherwise int16 lanes into dot_i16x8_s
    if dot not in RELAXED_DOTS:
        raise ValueError(f"relaxed byte dot {dot!r} is not one of {', '.join(RELAXED_DOTS)}")
    sums16 = act8 and dot == "i16x8"
    xdtype = "int8" if act8 else "int16"
    xmax = XQ_MAX[form]
    parts = 2 if form == "int8x2" else 1  # int8x2: the rounded value and its residue times LO_SCALE
    dscale = 1.0 / LO_SCALE if parts == 2 else 1.0
    rr = ROWS  # output rows per step, one per lane
    blocks = (n + rr - 1) // rr
    inter = interleaved(n)  # the 4 rows of a block stored word by word, their scales side by side

    def row(rb, r):
        return T.min(rb * rr + r, n - 1) if n % rr else rb * rr + r

    def wat(rb, r, g):
        """Byte offset of row ``r`` of block ``rb``, group ``g``, in the weights."""
        if inter:
            return (rb * groups + g) * (rr * gbytes) + r * gbytes
        return row(rb, r) * rowbytes + g * gbytes

    def idot(a, b):
        return T.call_llvm_pure_intrin("int32x4", idot_name, a, b)

    def rdot(a, b, c):
        """relaxed_dot_i8x16_i7x16_add_s(a signed bytes, b 7-bit bytes, c)."""
        if arch == "wasm32":
            return T.call_llvm_pure_intrin("int32x4", RELAXED_DOT, a, b, c)
        pairs = T.call_llvm_pure_intrin("int16x8", X86_BYTE_DOT, b, a)
        return idot(pairs, T.Broadcast(T.int16(1), 8)) + c

    def bdot(a, b):
        """i16x8.relaxed_dot_i8x16_i7x16_s(a signed bytes, b 7-bit bytes): lane ``j`` = ``a[2j] b[2j] + a[2j+1]
        b[2j+1]`` (x86: ``pmaddubsw(b, a)``, which treats ``b`` as unsigned: the same for 0 <= b <= 127; its
        saturation, like the relaxed instruction's, is never reached here, :data:`I16_SUMS`)."""
        if arch == "wasm32":
            return T.call_llvm_pure_intrin("int16x8", RELAXED_DOT16, a, b)
        return T.call_llvm_pure_intrin("int16x8", X86_BYTE_DOT, b, a)

    def widen(s16, p):
        """int16x8 sums of part ``p`` -> int32x4, lane ``r`` = lanes ``2r + 2r+1``, times LO_SCALE for the value
        part: one ``i32x4.dot_i16x8_s`` against a constant (``pmaddwd``)."""
        return idot(s16, T.Broadcast(T.int16(int(LO_SCALE) if p == 0 and parts == 2 else 1), 8))

    def x16(xq, u, at):
        """8 activations as int16 lanes."""
        return xq[u, 0, T.Ramp(at, 1, 8)]

    def dot_group(wv, wb, xq, r, u, g):
        """Integer dot of one group of row ``r``: 32 weights against 32 activations (int32x4 partial sums)."""
        if sums16:  # per part two byte dots of 16 weights, added as int16 (2 <= I16_SUMS), widened once
            return tree([widen(bdot(xq[u, p, T.Ramp(g * GROUP, 1, 16)], wb[r, 0, T.Ramp(0, 1, 16)])
                               + bdot(xq[u, p, T.Ramp(g * GROUP + 16, 1, 16)], wb[r, 1, T.Ramp(0, 1, 16)]), p)
                         for p in range(parts)])
        if act8:
            zero = T.Broadcast(T.int32(0), 4)
            part = [rdot(xq[u, p, T.Ramp(g * GROUP + 16, 1, 16)], wb[r, 1, T.Ramp(0, 1, 16)],
                         rdot(xq[u, p, T.Ramp(g * GROUP, 1, 16)], wb[r, 0, T.Ramp(0, 1, 16)], zero))
                    for p in range(parts)]
            return part[0] * T.Broadcast(T.int32(int(LO_SCALE)), 4) + part[1] if parts == 2 else part[0]
        return (idot(wv[r, 0, T.Ramp(0, 1, 8)], x16(xq, u, g * GROUP))
                + idot(wv[r, 1, T.Ramp(0, 1, 8)], x16(xq, u, g * GROUP + 8))
                + idot(wv[r, 2, T.Ramp(0, 1, 8)], x16(xq, u, g * GROUP + 16))
                + idot(wv[r, 3, T.Ramp(0, 1, 8)], x16(xq, u, g * GROUP + 24)))

    def lanes4(wv, wb, xq, g, u):
        """One group's integer sums of the block's four rows against token ``u`` of the tile, as one int32x4."""
        return _reduce4(T, dot_group(wv, wb, xq, 0, u, g), dot_group(wv, wb, xq, 1, u, g),
                        dot_group(wv, wb, xq, 2, u, g), dot_group(wv, wb, xq, 3, u, g))

    gwords = GROUP * bits // 32  # 32-bit words per row and group: 4 at 4 bits, 8 at 8 bits

    def tree(terms):
        """Sum of int32x4 terms as a balanced tree (short dependency chains)."""
        while len(terms) > 1:
            terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
        return terms[0]

    def xsplat(xw, u, p, at):
        """32 bits of token ``u``'s activations (part ``p``) from element slot ``at`` on, repeated across the
        vector (one splat load): 4 bytes (relaxed), or 2 int16 (stored in :func:`xslot` order)."""
        i = ((u * parts + p) * k + at) // (4 if act8 else 2)
        return T.reinterpret("int8x16" if act8 else "int16x8", T.Broadcast(xw[i], 4))

    def quads4(wh, wq, xw, g, u):
        """Interleaved rows (:func:`pack_for_cpu`): one group's integer sums of the block's four rows against token
        ``u``, as one int32x4 with a row per lane, without any reduction across lanes. Word ``c`` of the block
        holds 4 bytes of each of the 4 rows: their elements ``4c .. 4c + 3`` (at 4 bits, the low nibbles; the high
        ones ``16 + 4c ..``). Byte dots (relaxed): a 16-byte load is a row per lane, each lane's 4 products against
        4 activations splat across the vector. int16 dots: as eight 16-bit lanes the load is 2 lanes a row, lane
        ``2r + j`` holding bytes ``2j``, ``2j + 1`` of row ``r``; one mask (and shift) leaves in each lane one
        element, elements ``4c + j * 2`` (or ``4c + 1 + j * 2``, ...) of row ``r``, and the dot with those two
        activations splat across the vector (:func:`xslot` stores them side by side) adds both into lane ``r``."""
        if act8 and not sums16:
            zero = T.Broadcast(T.int32(0), 4)
            part = []
            for p in range(parts):
                lo_chain, hi_chain = zero, zero
                for c in range(gwords):
                    lo_chain = rdot(xsplat(xw, u, p, g * GROUP + 4 * c), wq[c, 0, T.Ramp(0, 1, 16)], lo_chain)
                    hi_chain = rdot(xsplat(xw, u, p, g * GROUP + 16 + 4 * c), wq[c, 1, T.Ramp(0, 1, 16)], hi_chain)
                part.append(lo_chain + hi_chain)
            return part[0] * T.Broadcast(T.int32(int(LO_SCALE)), 4) + part[1] if parts == 2 else part[0]
        if act8:
            # per part (value, residue byte) the group's 8 byte dots (I16_SUMS) are added as int16: lanes 2r, 2r + 1
            # hold row r's sums of elements 4c, 4c + 1 and 4c + 2, 4c + 3; one widening adds each pair into lane r
            part = []
            for p in range(parts):
                terms = []
                for c in range(gwords):
                    terms.append(bdot(xsplat(xw, u, p, g * GROUP + 4 * c), wq[c, 0, T.Ramp(0, 1, 16)]))
                    terms.append(bdot(xsplat(xw, u, p, g * GROUP + 16 + 4 * c), wq[c, 1, T.Ramp(0, 1, 16)]))
                assert len(terms) <= I16_SUMS
                part.append(widen(tree(terms), p))
            return tree(part)
        terms = []
        for c in range(gwords):
            for e in range(4 if four else 2):  # four: byte 0 low, byte 1 low, byte 0 high, byte 1 high
                at = g * GROUP + 4 * c + (e % 2) * 2 + (e // 2) * 16
                terms.append(idot(wh[c, e, T.Ramp(0, 1, 8)], xsplat(xw, u, 0, at)))
        return tree(terms)

    def xslot(i):
        """Where element ``i`` of a group of activations is stored: in order for the byte dots and rows stored one
        after another; for the int16 dots of interleaved rows (:func:`quads4`) each 4 elements as 0, 2, 1, 3, so
        that elements ``4c``, ``4c + 2`` (and ``4c + 1``, ``4c + 3``) are one 32-bit word."""
        if act8 or not inter:
            return i
        return i // 4 * 4 + i % 2 * 2 + i // 2 % 2

    def sums(wv, wb, wh, wq, xq, xw, g, u):
        """One group's integer sums of the block's four rows against token ``u``: :func:`quads4` where the rows are
        interleaved, :func:`lanes4` (row after row) otherwise."""
        return quads4(wh, wq, xw, g, u) if inter else lanes4(wv, wb, xq, g, u)

    def f32(e):
        return T.Cast("float32x4", e)

    def bc(e):
        return T.Broadcast(e, VEC)

    V4 = T.Ramp(0, 1, VEC)

    @T.macro
    def body(x, w, s, mf, y, b, t):
        for bi in T.serial(b):
            with T.sblock("qmatmul"):
                vb = T.axis.remap("S", [bi])
                T.reads(x[vb, 0:t, 0:k], w[0:n, 0:words], s[0:n, 0:groups])
                T.writes(y[vb, 0:t, 0:n])
                w8 = T.decl_buffer((n * rowbytes,), "uint8", data=w.data)
                sf = T.decl_buffer((n * groups,), "float32", data=s.data)
                xq = T.sblock_alloc_buffer((tt, parts, k), xdtype)  # activations: int16, or int8 value + residue
                xd = T.sblock_alloc_buffer((groups, tt), "float32")  # activation scale per group (tokens adjacent)
                xo = T.sblock_alloc_buffer((groups, tt), "float32")  # group sum of x as rounded, scaled (q4_1)
                # symmetric formats: the group sum of the integers times the weights' offset, added to the integer
                # dot before it becomes float (8-bit weights are stored 0..255: the offset term nearly cancels the
                # dot, and a float sum of the two would lose the difference's low bits)
                xi = T.sblock_alloc_buffer((groups, tt), "int32")
                red = T.sblock_alloc_buffer((3,), "float32")
                isum = T.sblock_alloc_buffer((1,), "int32")
                acc = T.sblock_alloc_buffer((tt, VEC), "float32")  # per token of the tile: the block's four rows
                ls = T.sblock_alloc_buffer((VEC,), "float32")  # the four rows' scales of a group
                lm = T.sblock_alloc_buffer((VEC,), "float32")  # ... and their q_min
                wv = T.sblock_alloc_buffer((rr, 4, 8), "int16")
                wb = T.sblock_alloc_buffer((rr, 2, 16), "uint8")
                wh = T.sblock_alloc_buffer((gwords, 4, 8), "int16")  # interleaved, int16 dots: word, element
                wq = T.sblock_alloc_buffer((gwords, 2, 16), "uint8")  # interleaved, byte dots: word, lo / hi
                # the weights as 16-bit lanes and the activations as 32-bit words (splat loads)
                w16 = T.decl_buffer((n * rowbytes // 2,), "uint16", data=w.data)
                xw = T.decl_buffer((tt * parts * k * (1 if act8 else 2) // 4,), "int32", data=xq.data)
                for tb in T.serial((t + tt - 1) // tt):
                    for u, g in T.grid(tt, groups):
                        red[0] = T.float32(0)
                        for i in T.serial(GROUP):
                            red[0] = T.max(red[0], T.fabs(x[vb, T.min(tb * tt + u, t - 1), g * GROUP + i]))
                        xd[g, u] = red[0] / T.float32(xmax) * T.float32(dscale)
                        red[1] = T.Select(red[0] > T.float32(0), T.float32(xmax) / red[0], T.float32(0))
                        isum[0] = 0
                        for i in T.serial(GROUP):
                            red[2] = x[vb, T.min(tb * tt + u, t - 1), g * GROUP + i] * red[1]
                            xq[u, 0, g * GROUP + xslot(i)] = T.Cast(xdtype, T.round(red[2]))
                            if parts == 2:
                                xq[u, parts - 1, g * GROUP + i] = T.Cast(xdtype, T.round(
                                    (red[2] - T.Cast("float32", xq[u, 0, g * GROUP + i])) * T.float32(LO_SCALE)))
                                isum[0] = isum[0] + T.Cast("int32", xq[u, 0, g * GROUP + i]) * int(LO_SCALE) \
                                    + T.Cast("int32", xq[u, parts - 1, g * GROUP + i])
                            else:
                                isum[0] = isum[0] + T.Cast("int32", xq[u, 0, g * GROUP + xslot(i)])
                        xo[g, u] = T.Cast("float32", isum[0]) * xd[g, u]
                        xi[g, u] = isum[0] * int(off)
                    for rb in T.serial(blocks):
                        for u in T.unroll(tt):
                            acc[u, V4] = T.Broadcast(T.float32(0), VEC)
                        for g in T.serial(groups):
                            if inter:
                                for c in T.unroll(gwords):
                                    at = ((rb * groups + g) * gwords + c) * (rr * 4)
                                    if act8:
                                        wbytes = w8[T.Ramp(at, 1, 16)]
                                        wq[c, 0, T.Ramp(0, 1, 16)] = T.bitwise_and(wbytes, T.Broadcast(T.uint8(15), 16))
                                        wq[c, 1, T.Ramp(0, 1, 16)] = T.shift_right(wbytes, T.Broadcast(T.uint8(4), 16))
                                    else:
                                        v = w16[T.Ramp(at // 2, 1, 8)]
                                        if four:  # byte 0 low nibble, byte 1 low, byte 0 high, byte 1 high
                                            for e in T.unroll(4):
                                                wh[c, e, T.Ramp(0, 1, 8)] = T.reinterpret("int16x8", T.bitwise_and(
                                                    T.shift_right(v, T.Broadcast(T.uint16(e % 2 * 8 + e // 2 * 4), 8)),
                                                    T.Broadcast(T.uint16(15), 8)))
                                        else:  # byte 0, byte 1
                                            for e in T.unroll(2):
                                                wh[c, e, T.Ramp(0, 1, 8)] = T.reinterpret("int16x8", T.bitwise_and(
                                                    T.shift_right(v, T.Broadcast(T.uint16(e * 8), 8)),
                                                    T.Broadcast(T.uint16(255), 8)))
                            else:
                                for r in T.unroll(rr):
                                    if act8:
                                        wbytes = w8[T.Ramp(wat(rb, r, g), 1, 16)]
                                        wb[r, 0, T.Ramp(0, 1, 16)] = T.bitwise_and(wbytes, T.Broadcast(T.uint8(15), 16))
                                        wb[r, 1, T.Ramp(0, 1, 16)] = T.shift_right(wbytes, T.Broadcast(T.uint8(4), 16))
                                    elif four:
                                        lo = T.Cast("int16x8", w8[T.Ramp(wat(rb, r, g), 1, 8)])
                                        hi = T.Cast("int16x8", w8[T.Ramp(wat(rb, r, g) + 8, 1, 8)])
                                        wv[r, 0, T.Ramp(0, 1, 8)] = T.bitwise_and(lo, T.Broadcast(T.int16(15), 8))
                                        wv[r, 1, T.Ramp(0, 1, 8)] = T.bitwise_and(hi, T.Broadcast(T.int16(15), 8))
                                        wv[r, 2, T.Ramp(0, 1, 8)] = T.shift_right(lo, T.Broadcast(T.int16(4), 8))
                                        wv[r, 3, T.Ramp(0, 1, 8)] = T.shift_right(hi, T.Broadcast(T.int16(4), 8))
                                    else:
                                        for c in T.unroll(4):
                                            wv[r, c, T.Ramp(0, 1, 8)] = T.Cast(
                                                "int16x8", w8[T.Ramp(wat(rb, r, g) + c * 8, 1, 8)])
                            if inter:
                                ls[V4] = sf[T.Ramp((rb * groups + g) * VEC, 1, VEC)]
                                if has_min:
                                    lm[V4] = mf[T.Ramp((rb * groups + g) * VEC, 1, VEC)]
                            else:
                                for r in T.unroll(VEC):
                                    ls[r] = sf[row(rb, r) * groups + g]
                                    if has_min:
                                        lm[r] = mf[row(rb, r) * groups + g]
                            for u in T.unroll(tt):
                                if has_min:
                                    acc[u, V4] = acc[u, V4] + f32(sums(wv, wb, wh, wq, xq, xw, g, u)) * ls[V4] \
                                        * bc(xd[g, u]) + lm[V4] * bc(xo[g, u])
                                else:
                                    acc[u, V4] = acc[u, V4] + ls[V4] * f32(
                                        sums(wv, wb, wh, wq, xq, xw, g, u) + T.Broadcast(xi[g, u], VEC)) * bc(xd[g, u])
                        for u in T.unroll(tt):
                            if inter:
                                y[vb, T.min(tb * tt + u, t - 1), T.Ramp(rb * rr, 1, VEC)] = acc[u, V4]
                            else:
                                for r in T.unroll(VEC):
                                    y[vb, T.min(tb * tt + u, t - 1), row(rb, r)] = acc[u, r]

    if has_min:
        @T.prim_func(private=True, s_tir=True)
        def qmatmul_q4_1(var_x: T.handle, w: T.Buffer((n, words), "uint32"), s: T.Buffer((n, groups), "float32"),
                         m: T.Buffer((n, groups), "float32"), var_y: T.handle):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8})
            b, t = T.int64(), T.int64()
            x = T.match_buffer(var_x, (b, t, k), "float32")
            y = T.match_buffer(var_y, (b, t, n), "float32")
            mf = T.decl_buffer((n * groups,), "float32", data=m.data)
            body(x, w, s, mf, y, b, t)

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

    gwords = words // groups
    inter = interleaved(vocab)

    # Where element c of row r sits in the layout of pack_for_cpu: 8-bit, byte c % 32 of its group g; 4-bit, byte
    # c % 16 of its group, low nibble for the group's first 16 elements, high nibble for the next 16; word j of the
    # row at (r // 4 * words + j) * 4 + r % 4 where the rows are interleaved, r * words + j otherwise. Scales: group
    # g of row r at slot (r // 4 * groups + g) * 4 + r % 4 where interleaved, r * groups + g otherwise.
    def at(r, j, width):
        """Flat index of item ``j`` of row ``r`` in a ``[vocab, width]`` array stored by :func:`_interleave`."""
        return (r // BLOCK_ROWS * width + j) * BLOCK_ROWS + r % BLOCK_ROWS if inter else r * width + j

    def slot(r, g):
        return at(r, g, groups)

    def word(r, c):
        return at(r, c // GROUP * gwords + (c % GROUP // 4 if bits == 8 else c % 16 // 4), words)

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
            wf = T.decl_buffer((vocab * words,), "uint32", data=w.data)
            sf = T.decl_buffer((vocab * groups,), "float32", data=s.data)
            mf = T.decl_buffer((vocab * groups,), "float32", data=m.data)
            for i, c in T.grid(t, hidden):
                with T.sblock("take"):
                    vi, vc = T.axis.remap("SS", [i, c])
                    out[vi, vc] = T.Cast("float32", T.bitwise_and(T.shift_right(
                        wf[word(ids[vi], vc)], shift(vc)), T.uint32(mask))) * sf[slot(ids[vi], vc // GROUP)] \
                        + mf[slot(ids[vi], vc // GROUP)]

        return take_q4_1

    @T.prim_func(private=True, s_tir=True)
    def take_q_sym(var_ids: T.handle, w: T.Buffer((vocab, words), "uint32"),
                   s: T.Buffer((vocab, groups), "float32"), var_out: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8})
        t = T.int64()
        ids = T.match_buffer(var_ids, (t,), "int32")
        out = T.match_buffer(var_out, (t, hidden), "float32")
        wf = T.decl_buffer((vocab * words,), "uint32", data=w.data)
        sf = T.decl_buffer((vocab * groups,), "float32", data=s.data)
        for i, c in T.grid(t, hidden):
            with T.sblock("take"):
                vi, vc = T.axis.remap("SS", [i, c])
                out[vi, vc] = (T.Cast("float32", T.bitwise_and(T.shift_right(
                    wf[word(ids[vi], vc)], shift(vc)), T.uint32(mask))) + T.float32(off)) \
                    * sf[slot(ids[vi], vc // GROUP)]

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


def specialize_for_cpu(mod, target=None, isa: str = "simd128", kv_cache: dict | None = None,
                       variant: dict | None = None):
    """Replace the model's dequantizing matmul/embedding PrimFuncs by the SIMD kernels above, and, given the model's
    ``kv_cache`` dimensions (``_metadata["kv_cache"]``), the KV cache's CPU attention by :mod:`.cpu_attention`'s.

    The kernels read weights in the layout of :func:`pack_for_cpu`, so the parameters must come through
    :func:`cpu_param_records`. Shapes and formats are read off each ``call_tir`` site. ``isa`` picks the
    kernels' instruction set (:data:`ISAS`), ``target`` the architecture whose instructions carry it: the page's
    wasm32 by default, x86-64 for native tests. ``variant`` (relaxed build only, for measurements:
    :func:`build_cpu_library_variant`) gives the 4-bit products :func:`qmatmul_kernel`'s ``act`` and ``dot``.
    """
    arch = _arch(target)
    if variant and isa != "relaxed-simd":
        raise ValueError(f"kernel variant {variant} is for the relaxed-SIMD build, not {isa}")
    _check_isa(isa)
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
                fmt = _format_of(params, k)
                opts = dict(variant or {}) if fmt in ("q4", "q4_1") else {}
                found[gv] = (gemv_kernel(fmt, k, n, isa=isa, arch=arch, **opts) if one_token
                             else gemm_kernel(fmt, k, n, isa=isa, arch=arch, **opts))

    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    mod = mod.clone() if hasattr(mod, "clone") else tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
    for gv, kernel in found.items():
        mod[gv] = kernel
    if kv_cache is None:
        return mod
    from .cpu_attention import replace_attention

    return replace_attention(mod, kv_cache)


def library_key(config, quantization, isa: str = "simd128") -> str:
    """Content key of a CPU model library: model shape, quantization, instruction set, kernels, ABI and TVM version
    (:mod:`.keys`)."""
    from .keys import cpu_library_key

    return cpu_library_key(config, quantization, isa=_check_isa(isa))


def build_cpu_library(config, quantization: Any = "q4f32_1", *, isa: str = "simd128", use_cache: bool = True,
                      progress: bool = True) -> Path:
    """Compile and link the model library for the page's CPU; return the path of the cached ``.wasm``.

    ``config`` is a family's config (e.g. :class:`.arch.llama.config.LlamaConfig`, or an HF-style dict),
    ``quantization`` a mode name or the :class:`.quant.modes.Quantization` from ``ggml_quantization``, ``isa``
    one of :data:`ISAS` (the same weights serve both builds). Its weights must be written through :func:`cpu_param_records`. Cached under ``cache_dir()/model-libs-cpu/``.
    Raises :class:`CompileError` for ``q4f16_1`` (float16 compute has no use on the CPU) and
    when TVM or the link fails.
    """
    from ..cache import build_lock, cache_dir
    from ..errors import CompileError
    from .arch import registry
    from .quant.modes import as_quantization

    cfg = registry.config_from_dict(config)
    quant = as_quantization(quantization)
    if quant.compute_dtype != "float32":
        raise CompileError(f"quantization {quant.name} computes in {quant.compute_dtype}; the CPU target "
                           "runs float32: use q4f32_1, ggml (GGUF input) or q0f32.")
    out = cache_dir() / "model-libs-cpu" / f"{library_key(cfg, quant, isa)}.wasm"
    if use_cache and out.is_file():
        return out
    # one build per library at a time across processes (they would share the temp file below); whoever waited
    # reads the other's result
    with build_lock(f"model-lib-cpu-{out.stem}"):
        if use_cache and out.is_file():
            return out
        return _build_cpu_library(cfg, quant, isa, out, use_cache, progress)


def build_cpu_library_variant(config, quantization: Any, out: Path, *, dot: str = "i32x4", act: str | None = None,
                              progress: bool = False) -> Path:
    """The relaxed-SIMD library with its 4-bit products built another way (:func:`qmatmul_kernel`'s ``dot`` and
    ``act``), written to ``out`` and not cached: for ``bench/cpu_variants.py``, which measures such variants beside
    the folder's own builds. ``act="int8"`` rounds activations to single bytes (llama.cpp's rule; other logits,
    :data:`XQ_MAX`) and is never what a model folder carries."""
    from .arch import registry
    from .quant.modes import as_quantization

    if dot not in RELAXED_DOTS:
        raise ValueError(f"relaxed byte dot {dot!r} is not one of {', '.join(RELAXED_DOTS)}")
    return _build_cpu_library(registry.config_from_dict(config), as_quantization(quantization), "relaxed-simd",
                              Path(out), False, progress, variant={"dot": dot, "act": act})


def _build_cpu_library(cfg: Any, quant: Any, isa: str, out: Path, use_cache: bool, progress: bool,
                       variant: dict | None = None) -> Path:
    from ..cache import atomic_write_bytes
    from .build import compile_module, link_executable
    from .model_lib import export_model

    target = cpu_target(isa)
    exported = export_model(cfg, quant, target)
    mod = specialize_for_cpu(exported.mod, target, isa, kv_cache=exported.metadata["kv_cache"], variant=variant)
    ex = compile_module(mod, target=target)
    tmp = out.with_suffix(".linking.wasm")
    link_executable(ex, tmp, target="cpu", use_cache=use_cache, progress=progress)
    atomic_write_bytes(out, tmp.read_bytes())
    tmp.unlink(missing_ok=True)
    return out


#: Tokens per tile in the prefill kernel: each weight word is decoded once for this many tokens.
TOKEN_TILE = 8


def gemm_kernel(fmt: str, k: int, n: int, isa: str = "simd128", arch: str = "wasm32", **variant):
    """Prefill's ``y = x @ W.T`` for ``t`` tokens: :func:`qmatmul_kernel` with :data:`TOKEN_TILE` tokens per
    decoded weight group (``f32`` weights: the decode kernel, token by token)."""
    if fmt == "f32":
        return gemv_kernel(fmt, k, n)
    return qmatmul_kernel(fmt, k, n, tile=TOKEN_TILE, isa=isa, arch=arch, **variant)
