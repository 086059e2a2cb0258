"""Attention kernels for the page's CPU (wasm32 SIMD128, one thread): decode over the paged KV cache and prefill over
the chunk's own keys, with the ABI of TVM's CPU kernels so the paged KV cache calls them unchanged.

TVM 0.27's CPU attention (``tvm.relax.frontend.nn.llm``'s ``_attention_decode_cpu`` and
``_attention_prefill_ragged_cpu``) is scalar: per key and head it rescales the whole output row (online softmax with
two ``exp2`` calls), evaluates the rotary-mode select per element, and the prefill kernel visits every key of every
query and masks the causal half away. On the page that is ~15% of a SmolLM2 decode step and ~13% of a prefill
(``bench/cpu_profile.py``). These kernels compute the same maths in two passes per query and key-value head: the
scores of the group's query heads against each key (one key row load serves the whole group; 4-lane products over
the head dimension), then one ``exp2`` per score and the weighted sum of value rows (4-lane, each value row loaded
once for the group). Scores are kept in log2 units (times ``sm_scale * log2(e)``) and ``lse`` is written as TVM's
kernels write it (``max + log2(sum)``), so the cache's merge of partial attention states is unchanged.

Scores soft-capped by :mod:`.attention` (Gemma 2) keep their cap in the replacements. Only the cache's rotary modes ``NONE`` and ``NORMAL`` are served (RoPE applied before the kernels, ``rotary_mode``
0); :func:`replace_attention` leaves a module whose cache applies RoPE inline, or a sliding window, to TVM's kernels.
"""
from __future__ import annotations

import math

LANES = 4
LOG2E = math.log2(math.e)

#: The KV cache's CPU attention functions this module replaces, by their names in the exported module (TVM's
#: kernels' own ``global_symbol`` / function names for an ``llvm`` target).
REPLACED = ("batch_decode_paged_kv_cpu", "batch_prefill_ragged_kv")


def _dot(T, a, ai, b, bi, d):
    """Sum over ``d`` (a multiple of 4) of ``a[ai + i] * b[bi + i]`` with 4-lane products (flat buffers)."""
    acc = a[T.Ramp(ai, 1, LANES)] * b[T.Ramp(bi, 1, LANES)]
    for c in range(1, d // LANES):
        acc = acc + a[T.Ramp(ai + c * LANES, 1, LANES)] * b[T.Ramp(bi + c * LANES, 1, LANES)]
    acc = acc + T.Shuffle([acc], [2, 3, 0, 1])
    acc = acc + T.Shuffle([acc], [1, 0, 3, 2])
    return T.Shuffle([acc], [0])


def decode_kernel(h_kv: int, h_q: int, d: int, page_size: int = 16, dtype: str = "float32",
                  softcap: float | None = None):
    """One query token per sequence against its paged keys and values (TVM's ``batch_decode_paged_kv`` ABI);
    ``softcap``: scores become ``cap * tanh(score / cap)`` (:func:`.attention.score_cap`), as in the kernel replaced."""
    from tvm.script import tirx as T

    from .attention import score_cap

    if d % LANES or dtype != "float32":
        raise ValueError(f"the CPU attention kernel needs float32 heads of a multiple of {LANES} (got {dtype}, {d})")
    G = h_q // h_kv

    @T.prim_func(s_tir=True)
    def batch_decode_paged_kv(
        Q_handle: T.handle, pages_handle: T.handle, page_table_indptr_handle: T.handle,
        page_table_values_handle: T.handle, var_length_info: T.handle, k_rope_pos_offset_handle: T.handle,
        q_rope_position_handle: T.handle, output_handle: T.handle, lse_handle: T.handle, rotary_mode: T.int32,
        rope_scale: T.float32, rope_theta: T.float32, sm_scale: T.float32,
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        B = T.int32()
        nnz_pages = T.int32()
        max_num_pages = T.int32()
        indptr_off = T.int32()
        values_off = T.int32()
        kpos_off = T.int32()
        qpos_off = T.int32()
        len_off = T.int32()
        Q = T.match_buffer(Q_handle, (B, h_q, d), dtype)
        pages = T.match_buffer(pages_handle, (max_num_pages, 2, h_kv, page_size, d), dtype)
        page_table_indptr = T.match_buffer(page_table_indptr_handle, (B + 1,), "int32", elem_offset=indptr_off)
        page_table_values = T.match_buffer(page_table_values_handle, (nnz_pages,), "int32", elem_offset=values_off)
        k_rope_pos_offset = T.match_buffer(k_rope_pos_offset_handle, (B,), "int32", elem_offset=kpos_off)
        q_rope_position = T.match_buffer(q_rope_position_handle, (B,), "int32", elem_offset=qpos_off)
        length_info = T.match_buffer(var_length_info, (B,), "int32", elem_offset=len_off)
        output = T.match_buffer(output_handle, (B, h_q, d), dtype)
        lse = T.match_buffer(lse_handle, (B, h_q), "float32")

        for b in T.serial(B):
            with T.sblock("attn"):
                vb = T.axis.remap("S", [b])
                T.reads(Q[vb, 0:h_q, 0:d], pages[0:max_num_pages, 0:2, 0:h_kv, 0:page_size, 0:d],
                        page_table_indptr[vb:vb + 2], page_table_values[0:nnz_pages], length_info[vb])
                T.writes(output[vb, 0:h_q, 0:d], lse[vb, 0:h_q])
                P = T.sblock_alloc_buffer((G * nnz_pages * page_size,), "float32")  # scores, then weights
                qs = T.sblock_alloc_buffer((G * d,), "float32")  # the group's queries
                o = T.sblock_alloc_buffer((G * d,), "float32")
                mx = T.sblock_alloc_buffer((G,), "float32")
                sm = T.sblock_alloc_buffer((G,), "float32")
                kf = T.decl_buffer((max_num_pages * 2 * h_kv * page_size * d,), dtype, data=pages.data)
                qf = T.decl_buffer((B * h_q * d,), dtype, data=Q.data)
                begin: T.let[T.int32] = page_table_indptr[vb]
                npages: T.let[T.int32] = page_table_indptr[vb + 1] - begin
                n: T.let[T.int32] = T.if_then_else(npages > 0, (npages - 1) * page_size + length_info[vb], 0)
                for hk in T.serial(h_kv):
                    for g, c in T.grid(G, d // LANES):
                        qs[T.Ramp(g * d + c * LANES, 1, LANES)] = qf[T.Ramp(
                            (vb * h_q + hk * G + g) * d + c * LANES, 1, LANES)]
                        o[T.Ramp(g * d + c * LANES, 1, LANES)] = T.Broadcast(T.float32(0), LANES)
                    for g in T.serial(G):
                        mx[g] = T.float32(-5e4)
                        sm[g] = T.float32(0)
                    for j in T.serial(n):
                        for g in T.unroll(G):
                            P[g * n + j] = score_cap(_dot(T, qs, g * d, kf, (
                                ((page_table_values[begin + j // page_size] * 2) * h_kv + hk) * page_size
                                + j % page_size) * d, d) * T.float32(LOG2E) * sm_scale, softcap)
                            mx[g] = T.max(mx[g], P[g * n + j])
                    for g, j in T.grid(G, n):
                        P[g * n + j] = T.exp2(P[g * n + j] - mx[g])
                        sm[g] = sm[g] + P[g * n + j]
                    for j in T.serial(n):
                        for g, c in T.grid(G, d // LANES):
                            o[T.Ramp(g * d + c * LANES, 1, LANES)] = o[T.Ramp(g * d + c * LANES, 1, LANES)] \
                                + T.Broadcast(P[g * n + j], LANES) * kf[T.Ramp(
                                    (((page_table_values[begin + j // page_size] * 2 + 1) * h_kv + hk) * page_size
                                     + j % page_size) * d + c * LANES, 1, LANES)]
                    for g, c in T.grid(G, d):
                        output[vb, hk * G + g, c] = T.if_then_else(sm[g] > T.float32(0), o[g * d + c] / sm[g],
                                                                   T.float32(0))
                    for g in T.serial(G):
                        lse[vb, hk * G + g] = T.if_then_else(sm[g] > T.float32(0), mx[g] + T.log2(sm[g]), mx[g])

    return batch_decode_paged_kv


def prefill_ragged_kernel(h_kv: int, h_q: int, d: int, dtype: str = "float32", softcap: float | None = None):
    """The chunk's queries against the chunk's own keys and values, causal or not (TVM's ``batch_prefill_ragged_kv``
    ABI; ``d`` is both the key and the value head size); ``softcap`` as in :func:`decode_kernel`."""
    from tvm.script import tirx as T

    from .attention import score_cap

    if d % LANES or dtype != "float32":
        raise ValueError(f"the CPU attention kernel needs float32 heads of a multiple of {LANES} (got {dtype}, {d})")
    G = h_q // h_kv

    @T.prim_func(s_tir=True)
    def batch_prefill_ragged_kv(
        var_q: T.handle, var_q_indptr: T.handle, var_k: T.handle, var_v: T.handle, var_kv_indptr: T.handle,
        var_q_rope_position: T.handle, var_k_rope_pos_offset: T.handle, var_output: T.handle, var_lse: T.handle,
        causal: T.int32, rotary_mode: T.int32, rope_scale: T.float32, rope_theta: T.float32, sm_scale: T.float32,
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch_size = T.int32()
        qo_len = T.int32()
        kv_len = T.int32()
        q_indptr_off = T.int32()
        kv_indptr_off = T.int32()
        qpos_off = T.int32()
        kpos_off = T.int32()
        q = T.match_buffer(var_q, (qo_len, h_q, d), dtype)
        q_indptr = T.match_buffer(var_q_indptr, (batch_size + 1,), "int32", elem_offset=q_indptr_off)
        k = T.match_buffer(var_k, (kv_len, h_kv, d), dtype)
        v = T.match_buffer(var_v, (kv_len, h_kv, d), dtype)
        kv_indptr = T.match_buffer(var_kv_indptr, (batch_size + 1,), "int32", elem_offset=kv_indptr_off)
        q_rope_position = T.match_buffer(var_q_rope_position, (qo_len,), "int32", elem_offset=qpos_off)
        k_rope_pos_offset = T.match_buffer(var_k_rope_pos_offset, (batch_size,), "int32", elem_offset=kpos_off)
        output = T.match_buffer(var_output, (qo_len, h_q, d), dtype)
        lse = T.match_buffer(var_lse, (qo_len, h_q), "float32")

        for b in T.serial(batch_size):
            with T.sblock("attn"):
                vb = T.axis.remap("S", [b])
                T.reads(q[0:qo_len, 0:h_q, 0:d], k[0:kv_len, 0:h_kv, 0:d], v[0:kv_len, 0:h_kv, 0:d],
                        q_indptr[vb:vb + 2], kv_indptr[vb:vb + 2])
                T.writes(output[0:qo_len, 0:h_q, 0:d], lse[0:qo_len, 0:h_q])
                P = T.sblock_alloc_buffer((G * kv_len,), "float32")
                qs = T.sblock_alloc_buffer((G * d,), "float32")
                o = T.sblock_alloc_buffer((G * d,), "float32")
                mx = T.sblock_alloc_buffer((G,), "float32")
                sm = T.sblock_alloc_buffer((G,), "float32")
                qf = T.decl_buffer((qo_len * h_q * d,), dtype, data=q.data)
                kf = T.decl_buffer((kv_len * h_kv * d,), dtype, data=k.data)
                vf = T.decl_buffer((kv_len * h_kv * d,), dtype, data=v.data)
                q0: T.let[T.int32] = q_indptr[vb]
                k0: T.let[T.int32] = kv_indptr[vb]
                nq: T.let[T.int32] = q_indptr[vb + 1] - q0
                nk: T.let[T.int32] = kv_indptr[vb + 1] - k0
                for i, hk in T.grid(nq, h_kv):
                    for g, c in T.grid(G, d // LANES):
                        qs[T.Ramp(g * d + c * LANES, 1, LANES)] = qf[T.Ramp(
                            ((q0 + i) * h_q + hk * G + g) * d + c * LANES, 1, LANES)]
                        o[T.Ramp(g * d + c * LANES, 1, LANES)] = T.Broadcast(T.float32(0), LANES)
                    for g in T.serial(G):
                        mx[g] = T.float32(-5e4)
                        sm[g] = T.float32(0)
                    # keys this query sees: all of them, or (causal) those up to its own position
                    n: T.let[T.int32] = T.if_then_else(causal > 0, T.min(nk - nq + i + 1, nk), nk)
                    for j in T.serial(n):
                        for g in T.unroll(G):
                            P[g * n + j] = score_cap(_dot(T, qs, g * d, kf, ((k0 + j) * h_kv + hk) * d, d)
                                                     * T.float32(LOG2E) * sm_scale, softcap)
                            mx[g] = T.max(mx[g], P[g * n + j])
                    for g, j in T.grid(G, n):
                        P[g * n + j] = T.exp2(P[g * n + j] - mx[g])
                        sm[g] = sm[g] + P[g * n + j]
                    for j in T.serial(n):
                        for g, c in T.grid(G, d // LANES):
                            o[T.Ramp(g * d + c * LANES, 1, LANES)] = o[T.Ramp(g * d + c * LANES, 1, LANES)] \
                                + T.Broadcast(P[g * n + j], LANES) * vf[T.Ramp(
                                    ((k0 + j) * h_kv + hk) * d + c * LANES, 1, LANES)]
                    for g, c in T.grid(G, d):
                        output[q0 + i, hk * G + g, c] = T.if_then_else(sm[g] > T.float32(0), o[g * d + c] / sm[g],
                                                                       T.float32(0))
                    for g in T.serial(G):
                        lse[q0 + i, hk * G + g] = T.if_then_else(sm[g] > T.float32(0), mx[g] + T.log2(sm[g]), mx[g])

    return batch_prefill_ragged_kv


def replace_attention(mod, kv_cache: dict, page_size: int = 16):
    """``mod`` with the KV cache's CPU decode and ragged-prefill attention (:data:`REPLACED`) swapped for the
    kernels above. ``kv_cache`` is the model's ``_metadata["kv_cache"]`` (``num_key_value_heads``,
    ``num_attention_heads``, ``head_dim``); ``page_size`` the one TVM's CPU kernels are made for.

    The caches :mod:`.model_lib` makes apply RoPE before attention (``RopeMode.NORMAL``) or not at all (``NONE``):
    ``rotary_mode`` is 0 in every call, and these kernels do not rotate. A kernel that soft-caps its scores
    (:func:`.attention.softcap_attention`, Gemma 2) is replaced by one with the same cap."""
    from tvm import tirx

    from .attention import SOFTCAP_ATTR, kernel_softcap

    h_kv, h_q, d = (int(kv_cache[k]) for k in ("num_key_value_heads", "num_attention_heads", "head_dim"))
    makers = {REPLACED[0]: lambda cap: decode_kernel(h_kv, h_q, d, page_size, softcap=cap),
              REPLACED[1]: lambda cap: prefill_ragged_kernel(h_kv, h_q, d, softcap=cap)}
    out = {}
    for gv, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc) and gv.name_hint in makers:
            new = makers[gv.name_hint](kernel_softcap(func))
            for key in ("global_symbol", SOFTCAP_ATTR):
                if func.attrs is not None and key in func.attrs:
                    new = new.with_attr(key, func.attrs[key])
            out[gv] = new
    for gv, f in out.items():
        mod[gv] = f
    return mod
