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

**Windowed layers** (Mistral, Gemma 2's even layers): the paged KV cache is told they are windowed (TVM's
``mha_sliding`` layers, so that it calls its windowed kernels for them) but with a window larger than any context
(:data:`UNBOUNDED_WINDOW`, why there), and :func:`use_windowed_attention` puts kernels written here in place of
TVM's windowed ones (prefill over cached pages and decode, GPU and CPU): each query walks only the keys inside the
model's window, with an online softmax in base 2. TVM's CPU windowed prefill also read its running maximum before
setting it when a query's first keys were masked (NaN logits). Within a prefill chunk the cache's own attention is
plainly causal, so chunks are no longer than the window (:class:`..arch.llama.config.LlamaConfig`).

Example::

    mod = softcap_attention(mod, 50.0)                    # every attention kernel of ``mod`` caps its scores
    mod = use_windowed_attention(mod, kv_heads, q_heads, head_dim, "float32", window=4096)
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
            f"attention logit soft-capping: kernel {name or 'of the KV cache'} has {len(found)} stores of a finished score, not "
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


def _loops(gpu: bool, threads: int) -> tuple[Any, int, str]:
    """(loop maker, threads a workgroup, scratch scope): a GPU binds the loops, the CPU walks them in order."""
    if gpu:
        return (lambda extent, thread: T.thread_binding(extent, thread)), threads, "local"
    return (lambda extent, thread: T.serial(extent)), 1, "global"


def windowed_prefill(num_kv_heads: int, num_qo_heads: int, head_dim: int, dtype: str = "float32", *,
                     window: int, softcap: float | None = None, gpu: bool = False,
                     page_size: int = 16) -> tirx.PrimFunc:
    """A windowed layer's prefill over its cached pages, with the arguments of TVM's
    ``batch_prefill_paged_kv[_cpu]_sliding_window``.

    The cache keeps every page for these layers (:data:`UNBOUNDED_WINDOW`), so the window is applied here: under
    ``causal`` query ``row`` of the chunk sees only the ``window - row - 1`` newest cached keys (the chunk itself holds
    the rest of its window); otherwise every cached key. ``length_info`` is ``[3, batch]`` (last page length, offset
    and sink of the cache's own window, read as it says). Each (query, head) walks its keys with an online softmax in
    base 2 (so ``lse`` means what the original's does: the cache merges it with the chunk's own attention); a query
    that sees none writes zeros and an ``lse`` of -5e4, which the merge weighs as nothing. RoPE is applied before
    keys are stored, so ``rotary_mode`` is unused. On a GPU each (query, head) is one thread, 16 a workgroup.
    """
    H_qo, H_kv, D = num_qo_heads, num_kv_heads, head_dim
    group = H_qo // H_kv
    par, TX, scope = _loops(gpu, 16)  # noqa: N806

    @T.prim_func(s_tir=True)
    def batch_prefill_paged_kv_sliding_window(
            var_q: T.handle, var_q_indptr: T.handle, var_pages: T.handle, var_page_indptr: T.handle,
            var_page_values: T.handle, var_length_info: T.handle, var_k_rope_pos_offset: T.handle,
            var_q_rope_position: T.handle, var_output: T.handle, var_lse: T.handle, causal: T.int32,
            rotary_mode: T.int32, rope_scale: T.float32, rope_theta: T.float32, sm_scale: T.float32):
        T.func_attr({"tirx.noalias": True})
        batch_size, total_len, nnz_pages, max_num_pages = T.int32(), T.int32(), T.int32(), T.int32()
        q_off, pi_off, pv_off, kr_off, qr_off, li_off = T.int32(), T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
        pages_off = T.int64()
        q = T.match_buffer(var_q, (total_len, H_qo, D), dtype)
        q_indptr = T.match_buffer(var_q_indptr, (batch_size + 1,), "int32", elem_offset=q_off)
        pages = T.match_buffer(var_pages, (max_num_pages, 2, H_kv, page_size, D), dtype, elem_offset=pages_off)
        page_indptr = T.match_buffer(var_page_indptr, (batch_size + 1,), "int32", elem_offset=pi_off)
        page_values = T.match_buffer(var_page_values, (nnz_pages,), "int32", elem_offset=pv_off)
        info = T.match_buffer(var_length_info, (3, batch_size), "int32", elem_offset=li_off)
        k_rope = T.match_buffer(var_k_rope_pos_offset, (batch_size,), "int32", elem_offset=kr_off)  # noqa: F841 - ABI
        q_rope = T.match_buffer(var_q_rope_position, (total_len,), "int32", elem_offset=qr_off)  # noqa: F841 - ABI
        output = T.match_buffer(var_output, (total_len, H_qo, D), dtype)
        lse = T.match_buffer(var_lse, (total_len, H_qo), "float32")
        for bx in par((total_len * H_qo + TX - 1) // TX, "blockIdx.x"):
            for tx in par(TX, "threadIdx.x"):
                with T.sblock("attn"):
                    T.reads()
                    T.writes()
                    qv = T.sblock_alloc_buffer((D,), "float32", scope=scope)
                    o = T.sblock_alloc_buffer((D,), "float32", scope=scope)
                    s = T.sblock_alloc_buffer((1,), "float32", scope=scope)
                    m = T.sblock_alloc_buffer((1,), "float32", scope=scope)
                    m_new = T.sblock_alloc_buffer((1,), "float32", scope=scope)
                    den = T.sblock_alloc_buffer((1,), "float32", scope=scope)
                    b = T.sblock_alloc_buffer((1,), "int32", scope=scope)
                    idx: T.let[T.int32] = bx * TX + tx
                    if idx < total_len * H_qo:
                        tok: T.let[T.int32] = idx // H_qo
                        h: T.let[T.int32] = idx % H_qo
                        b[0] = 0
                        for bb in T.serial(batch_size):
                            if q_indptr[bb] <= tok:
                                b[0] = bb
                        begin: T.let[T.int32] = page_indptr[b[0]]
                        n_pages: T.let[T.int32] = page_indptr[b[0] + 1] - begin
                        offset: T.let[T.int32] = info[1, b[0]]
                        sink: T.let[T.int32] = info[2, b[0]]
                        kv_len: T.let[T.int32] = T.if_then_else(
                            n_pages > 0, (n_pages - 1) * page_size + info[0, b[0]] - offset + sink, 0)
                        row: T.let[T.int32] = tok - q_indptr[b[0]]
                        kvh: T.let[T.int32] = h // group
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

    f = batch_prefill_paged_kv_sliding_window
    return f.with_attr("tirx.is_scheduled", True) if gpu else f


def windowed_decode(num_kv_heads: int, num_qo_heads: int, head_dim: int, dtype: str = "float32", *,
                    window: int, softcap: float | None = None, gpu: bool = False,
                    page_size: int = 16) -> tirx.PrimFunc:
    """A windowed layer's decode step, with the arguments of TVM's ``batch_decode_paged_kv[_cpu]_sliding_window``.

    The new token's key is already in the pages (the cache appends before decode attention); the token sees its
    ``window`` newest keys, itself included. One thread per (sequence, query head) on a GPU, online softmax in
    base 2, as :func:`.schedules.decode_attention_fallback`.
    """
    H_qo, H_kv, D = num_qo_heads, num_kv_heads, head_dim
    group = H_qo // H_kv
    par, _, scope = _loops(gpu, 1)

    @T.prim_func(s_tir=True)
    def batch_decode_paged_kv_sliding_window(
            q_handle: T.handle, pages_handle: T.handle, indptr_handle: T.handle, values_handle: T.handle,
            length_handle: T.handle, k_rope_handle: T.handle, q_rope_handle: T.handle, out_handle: T.handle,
            lse_handle: T.handle, rotary_mode: T.int32, rope_scale: T.float32, rope_theta: T.float32,
            sm_scale: T.float32):
        T.func_attr({"tirx.noalias": True})
        B, nnz_pages, max_num_pages = T.int32(), T.int32(), T.int32()
        pages_off = T.int64()
        indptr_off, values_off, k_rope_off, q_rope_off, length_off = T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
        Q = T.match_buffer(q_handle, (B, H_qo, D), dtype)
        pages = T.match_buffer(pages_handle, (max_num_pages, 2, H_kv, page_size, D), dtype, elem_offset=pages_off)
        indptr = T.match_buffer(indptr_handle, (B + 1,), "int32", elem_offset=indptr_off)
        values = T.match_buffer(values_handle, (nnz_pages,), "int32", elem_offset=values_off)
        info = T.match_buffer(length_handle, (3, B), "int32", elem_offset=length_off)
        k_rope = T.match_buffer(k_rope_handle, (B,), "int32", elem_offset=k_rope_off)  # noqa: F841 - ABI only
        q_rope = T.match_buffer(q_rope_handle, (B,), "int32", elem_offset=q_rope_off)  # noqa: F841 - ABI only
        output = T.match_buffer(out_handle, (B, H_qo, D), dtype)
        lse = T.match_buffer(lse_handle, (B, H_qo), "float32")
        for bx in par(B * H_qo, "blockIdx.x"):
            for tx in par(1, "threadIdx.x"):
                with T.sblock("attn"):
                    T.reads()
                    T.writes()
                    qv = T.sblock_alloc_buffer((D,), "float32", scope=scope)
                    o = T.sblock_alloc_buffer((D,), "float32", scope=scope)
                    s = T.sblock_alloc_buffer((1,), "float32", scope=scope)
                    m = T.sblock_alloc_buffer((1,), "float32", scope=scope)
                    m_new = T.sblock_alloc_buffer((1,), "float32", scope=scope)
                    den = T.sblock_alloc_buffer((1,), "float32", scope=scope)
                    b: T.let[T.int32] = (bx + tx) // H_qo
                    h: T.let[T.int32] = (bx + tx) % H_qo
                    kvh: T.let[T.int32] = h // group
                    begin: T.let[T.int32] = indptr[b]
                    n_pages: T.let[T.int32] = indptr[b + 1] - begin
                    offset: T.let[T.int32] = info[1, b]
                    sink: T.let[T.int32] = info[2, b]
                    kv_len: T.let[T.int32] = T.if_then_else(
                        n_pages > 0, (n_pages - 1) * page_size + info[0, b] - offset + sink, 0)
                    first: T.let[T.int32] = T.max(kv_len - window, 0)
                    for d in T.serial(D):
                        qv[d] = T.Cast("float32", Q[b, h, d]) * sm_scale * T.float32(_LOG2E)
                        o[d] = T.float32(0)
                    m[0] = T.float32(-5e4)
                    den[0] = T.float32(0)
                    for j in T.serial(kv_len - first):
                        pos: T.let[T.int32] = T.if_then_else(first + j < sink, first + j, first + j - sink + offset)
                        page: T.let[T.int32] = values[begin + pos // page_size]
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
                        output[b, h, d] = T.Cast(dtype, T.if_then_else(den[0] > 0, o[d] / den[0], T.float32(0)))
                    lse[b, h] = T.if_then_else(den[0] > 0, m[0] + T.log2(den[0]), T.float32(-5e4))

    f = batch_decode_paged_kv_sliding_window
    return f.with_attr("tirx.is_scheduled", True) if gpu else f


#: The window the paged KV cache is told for its windowed layers: larger than any context, so that it keeps (and
#: hands the windowed kernels) every page. TVM 0.27's runtime selects a window's pages into the same device buffers
#: as every layer's page table on devices other than CUDA and the CPU (its "plain" auxiliary-data manager), so on
#: WebGPU the full-attention layers of a model with both kinds saw only the window's pages once the sequence passed
#: it. The model's own window is applied by :func:`windowed_prefill` and :func:`windowed_decode` instead.
UNBOUNDED_WINDOW = 1 << 30

#: TVM's windowed-layer kernels -> (maker, GPU)
_WINDOWED = {"batch_prefill_paged_kv_sliding_window": (windowed_prefill, True),
             "batch_decode_paged_kv_sliding_window": (windowed_decode, True),
             "batch_prefill_paged_kv_cpu_sliding_window": (windowed_prefill, False),
             "batch_decode_paged_kv_cpu_sliding_window": (windowed_decode, False)}


def use_windowed_attention(mod: tvm.IRModule, num_kv_heads: int, num_qo_heads: int, head_dim: int,
                           dtype: str, window: int) -> tvm.IRModule:
    """``mod`` with the KV cache's windowed-layer kernels replaced by :func:`windowed_prefill` and
    :func:`windowed_decode` over ``window`` (each keeping the replaced kernel's symbol and soft cap)."""
    mod = mod.clone() if hasattr(mod, "clone") else mod
    for gv, func in list(mod.functions.items()):
        if not isinstance(func, tirx.PrimFunc) or gv.name_hint not in _WINDOWED:
            continue
        maker, gpu = _WINDOWED[gv.name_hint]
        new = maker(num_kv_heads, num_qo_heads, head_dim, dtype, window=window, softcap=kernel_softcap(func), gpu=gpu)
        new = new.with_attr("global_symbol", func.attrs["global_symbol"] if func.attrs and "global_symbol" in
                            func.attrs else gv.name_hint)
        if kernel_softcap(func) is not None:
            new = new.with_attr(SOFTCAP_ATTR, kernel_softcap(func))
        mod[gv] = new
    return mod
