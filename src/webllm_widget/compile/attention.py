"""Attention maths the paged KV cache's kernels lack: logit soft-capping, and a CPU prefill over cached pages.

**Soft-capping** (Gemma 2): every attention score, after the ``sm_scale`` product and before the mask and the
softmax, becomes ``cap * tanh(score / cap)``. TVM 0.27's KV-cache kernels (``nn.llm.kv_cache``) have no such
option and mlc-llm's Gemma 2 leaves the cap out. :func:`softcap_attention` rewrites the kernels TVM generated
instead of replacing them, so each keeps its schedule: in every kernel that takes ``sm_scale`` it finds the one
store that holds a finished score and wraps the stored value. The kernels keep scores in base 2 (``score *
log2(e)``, for ``exp2``), so the cap there is ``cap * log2(e)``: ``C tanh(s log2(e) / C) = log2(e) cap tanh(s /
cap)``. Three store shapes hold a finished score in TVM 0.27's kernels: the tiled GPU kernels copy ``S_local`` to
``S_smem`` after the product, the GPU decode kernel copies the cross-thread sum ``t0`` to ``S_local``, and the CPU
kernels multiply a finished dot product by ``sm_scale``. A kernel with none of them, or more than one, stops the
build (:class:`SoftCapError`): a cap is never dropped. The rewritten kernels record the cap in the attribute
``webllm_widget.softcap`` so that a kernel that replaces one of them (the software-adapter kernels in
:mod:`.schedules`) applies the same cap.

**CPU prefill over cached pages in windowed layers**: TVM 0.27's ``batch_prefill_paged_kv_cpu_sliding_window``
reads its running maximum before setting it when a query's first cached keys are masked (always so once the
sequence passes the window), which gave NaN logits. :func:`windowed_paged_prefill_cpu` takes its place (same
arguments): each query walks only its visible cached keys with an online softmax in base 2.

Example::

    mod = softcap_attention(mod, 50.0)                    # every attention kernel of ``mod`` caps its scores
    mod = use_cpu_windowed_prefill(mod, kv_heads, q_heads, head_dim, "float32", window=4096)
"""
from __future__ import annotations

import math
from typing import Any

import tvm
from tvm import ir, tirx
from tvm.script import tirx as T

_LOG2E = math.log2(math.e)
#: PrimFunc attribute holding the soft cap a kernel applies to its scores.
SOFTCAP_ATTR = "webllm_widget.softcap"


class SoftCapError(RuntimeError):
    """An attention kernel's scores could not be found to cap (its shape is not one this module knows)."""


def _name(buf: Any) -> str:
    return str(buf.name)


def _only_product_of_scale(value: Any, scale: tirx.Var) -> bool:
    """``value`` is a product of one loaded value, constants and ``sm_scale`` (a finished score being scaled)."""
    loads, has_scale, ok = 0, False, True

    def visit(e: Any) -> None:
        nonlocal loads, has_scale, ok
        if isinstance(e, tirx.Mul):
            visit(e.a)
            visit(e.b)
        elif isinstance(e, ir.TensorLoad):
            loads += 1
        elif isinstance(e, tirx.Var):
            has_scale |= e.same_as(scale)
            ok &= e.same_as(scale)
        elif isinstance(e, tirx.Cast):
            visit(e.value)
        elif not isinstance(e, (tirx.FloatImm, tirx.IntImm)):
            ok = False

    visit(value)
    return ok and has_scale and loads == 1


def _finished_score(store: tirx.BufferStore, scale: tirx.Var) -> bool:
    v = store.value
    if isinstance(v, ir.TensorLoad):
        return (_name(store.buffer), _name(v.source)) in {("S_smem", "S_local"), ("S_local", "t0")}
    return _only_product_of_scale(v, scale)


def softcap_kernel(func: tirx.PrimFunc, cap: float, name: str = "") -> tirx.PrimFunc:
    """``func`` (an attention kernel taking ``sm_scale``) with ``cap * tanh(score / cap)`` on every score."""
    from tvm_ffi.structural import structural_map

    scale = next((p for p in func.params if p.name == "sm_scale"), None)
    if scale is None:
        raise SoftCapError(f"{name or 'the kernel'} takes no sm_scale: it is not an attention kernel")
    c = tirx.FloatImm("float32", cap * _LOG2E)
    found = []

    def cap_store(store: tirx.BufferStore) -> tirx.BufferStore:
        if not _finished_score(store, scale):
            return store
        found.append(store)
        return tirx.BufferStore(store.buffer, c * tirx.tanh(store.value / c), store.indices)

    out = structural_map(func, [(tirx.BufferStore, cap_store)])
    if len(found) != 1:
        raise SoftCapError(
            f"attention logit soft-capping: kernel {name or func} has {len(found)} stores of a finished score, not "
            "one; webllm-widget cannot apply the cap there and refuses to build the model without it.")
    return out.with_attr(SOFTCAP_ATTR, float(cap))


def softcap_attention(mod: tvm.IRModule, cap: float) -> tvm.IRModule:
    """``mod`` with every attention kernel (every PrimFunc taking ``sm_scale``) capping its scores at ``cap``."""
    mod = mod.clone() if hasattr(mod, "clone") else mod
    n = 0
    for gv, func in list(mod.functions.items()):
        if isinstance(func, tirx.PrimFunc) and any(p.name == "sm_scale" for p in func.params):
            mod[gv] = softcap_kernel(func, cap, gv.name_hint)
            n += 1
    if not n:
        raise SoftCapError("attention logit soft-capping: the module has no attention kernel to cap")
    return mod


def kernel_softcap(func: Any) -> float | None:
    """The cap an attention kernel applies (``None``: none)."""
    if func.attrs is None or SOFTCAP_ATTR not in func.attrs:
        return None
    return float(func.attrs[SOFTCAP_ATTR])


def score_cap(score: Any, cap: float | None) -> Any:
    """``score`` (base 2, float32) soft-capped at ``cap`` (identity for ``None``), for kernels written here."""
    if not cap:
        return score
    c = tirx.FloatImm("float32", cap * _LOG2E)
    return c * tirx.tanh(score / c)


def windowed_paged_prefill_cpu(num_kv_heads: int, num_qo_heads: int, head_dim: int, dtype: str = "float32",
                               window: int = 1024, softcap: float | None = None,
                               page_size: int = 16) -> tirx.PrimFunc:
    """Prefill attention of a chunk's queries over a windowed layer's cached pages (the arguments of
    ``batch_prefill_paged_kv_cpu_sliding_window``).

    ``length_info`` is ``[3, batch]``: last page length, the window's offset into its first page, sink length.
    Under ``causal`` query ``row`` of the chunk sees only the ``window - row - 1`` newest cached keys (the chunk
    itself, attended by the ragged kernel, holds the rest of its window); otherwise every cached key.
    RoPE is applied before keys are stored (the cache never runs inline RoPE here), so ``rotary_mode`` is unused.
    A query that sees no cached key writes zeros and an ``lse`` of -5e4, which the merge with the chunk's own
    attention weighs as nothing.
    """
    H_qo, H_kv, D = num_qo_heads, num_kv_heads, head_dim
    group = H_qo // H_kv

    @T.prim_func(s_tir=True)
    def batch_prefill_paged_kv_cpu_sliding_window(var_q: T.handle, var_q_indptr: T.handle, var_pages: T.handle,
                                   var_page_indptr: T.handle, var_page_values: T.handle, var_length_info: T.handle,
                                   var_k_rope_pos_offset: T.handle, var_q_rope_position: T.handle,
                                   var_output: T.handle, var_lse: T.handle, causal: T.int32, rotary_mode: T.int32,
                                   rope_scale: T.float32, rope_theta: T.float32, sm_scale: T.float32):
        T.func_attr({"tirx.noalias": True})
        batch_size, total_len, nnz_pages, max_num_pages = T.int32(), T.int32(), T.int32(), T.int32()
        q_off, pi_off, pv_off, kr_off, qr_off, li_off = T.int32(), T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
        q = T.match_buffer(var_q, (total_len, H_qo, D), dtype)
        q_indptr = T.match_buffer(var_q_indptr, (batch_size + 1,), "int32", elem_offset=q_off)
        pages = T.match_buffer(var_pages, (max_num_pages, 2, H_kv, page_size, D), dtype)
        page_indptr = T.match_buffer(var_page_indptr, (batch_size + 1,), "int32", elem_offset=pi_off)
        page_values = T.match_buffer(var_page_values, (nnz_pages,), "int32", elem_offset=pv_off)
        info = T.match_buffer(var_length_info, (3, batch_size), "int32", elem_offset=li_off)
        k_rope = T.match_buffer(var_k_rope_pos_offset, (batch_size,), "int32", elem_offset=kr_off)  # noqa: F841 - ABI
        q_rope = T.match_buffer(var_q_rope_position, (total_len,), "int32", elem_offset=qr_off)  # noqa: F841 - ABI
        output = T.match_buffer(var_output, (total_len, H_qo, D), dtype)
        lse = T.match_buffer(var_lse, (total_len, H_qo), "float32")
        for b in T.serial(batch_size):
            for h in T.serial(H_qo):
                with T.sblock("attn"):
                    T.reads()
                    T.writes()
                    qv = T.sblock_alloc_buffer((D,), "float32")
                    o = T.sblock_alloc_buffer((D,), "float32")
                    s = T.sblock_alloc_buffer((1,), "float32")
                    m = T.sblock_alloc_buffer((1,), "float32")
                    m_new = T.sblock_alloc_buffer((1,), "float32")
                    den = T.sblock_alloc_buffer((1,), "float32")
                    begin: T.let[T.int32] = page_indptr[b]
                    n_pages: T.let[T.int32] = page_indptr[b + 1] - begin
                    offset: T.let[T.int32] = info[1, b]
                    sink: T.let[T.int32] = info[2, b]
                    kv_len: T.let[T.int32] = T.if_then_else(
                        n_pages > 0, (n_pages - 1) * page_size + info[0, b] - offset + sink, 0)
                    qo_len: T.let[T.int32] = q_indptr[b + 1] - q_indptr[b]
                    kvh: T.let[T.int32] = h // group
                    for row in T.serial(qo_len):
                        tok: T.let[T.int32] = q_indptr[b] + row
                        first: T.let[T.int32] = T.if_then_else(
                            causal > 0, T.max(kv_len - T.max(window - row - 1, 0), 0), 0)
                        for d in T.serial(D):
                            qv[d] = T.Cast("float32", q[tok, h, d]) * sm_scale * T.float32(_LOG2E)
                            o[d] = T.float32(0)
                        m[0] = T.float32(-5e4)
                        den[0] = T.float32(0)
                        for j in T.serial(kv_len - first):
                            pos: T.let[T.int32] = T.if_then_else(first + j < sink, first + j,
                                                                 first + j - sink + offset)
                            page: T.let[T.int32] = page_values[begin + pos // page_size]
                            s[0] = T.float32(0)
                            for d in T.serial(D):
                                s[0] = s[0] + qv[d] * T.Cast("float32", pages[page, 0, kvh, pos % page_size, d])
                            s[0] = score_cap(s[0], softcap)
                            m_new[0] = T.max(m[0], s[0])
                            den[0] = den[0] * T.exp2(m[0] - m_new[0]) + T.exp2(s[0] - m_new[0])
                            for d in T.serial(D):
                                o[d] = o[d] * T.exp2(m[0] - m_new[0]) + T.exp2(s[0] - m_new[0]) * T.Cast(
                                    "float32", pages[page, 1, kvh, pos % page_size, d])
                            m[0] = m_new[0]
                        for d in T.serial(D):
                            output[tok, h, d] = T.Cast(dtype, T.if_then_else(den[0] > 0, o[d] / den[0], T.float32(0)))
                        lse[tok, h] = T.if_then_else(den[0] > 0, m[0] + T.log2(den[0]), T.float32(-5e4))

    return batch_prefill_paged_kv_cpu_sliding_window


def use_cpu_windowed_prefill(mod: tvm.IRModule, num_kv_heads: int, num_qo_heads: int, head_dim: int,
                             dtype: str = "float32", window: int = 1024) -> tvm.IRModule:
    """``mod`` (a CPU module) with TVM's ``batch_prefill_paged_kv_cpu_sliding_window`` replaced by
    :func:`windowed_paged_prefill_cpu` (keeping its symbol and soft cap)."""
    mod = mod.clone() if hasattr(mod, "clone") else mod
    for gv, func in list(mod.functions.items()):
        if not isinstance(func, tirx.PrimFunc) or gv.name_hint != "batch_prefill_paged_kv_cpu_sliding_window":
            continue
        new = windowed_paged_prefill_cpu(num_kv_heads, num_qo_heads, head_dim, dtype, window, kernel_softcap(func))
        for key in ("global_symbol", SOFTCAP_ATTR):
            if func.attrs is not None and key in func.attrs:
                new = new.with_attr(key, func.attrs[key])
        mod[gv] = new
    return mod
