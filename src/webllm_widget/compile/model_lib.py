"""Builds a web-llm model library: the Llama module plus every function web-llm 0.2.85 calls, compiled by TVM.

The functions and their argument order (read off web-llm's ``llm_chat.ts``)::

    _metadata()                                         -> JSON string
    embed(input_ids[n] i32, params)                     -> [n, hidden]
    prefill(embeds[1, n, hidden], kv_cache, params)     -> (logits[1, 1, vocab] f32, kv_cache)
    decode(embeds[1, 1, hidden], kv_cache, params)      -> (logits[1, 1, vocab] f32, kv_cache)
    create_tir_paged_kv_cache(max_batch, max_total_len, prefill_chunk, page_size, sliding)  (ShapeTuples)
    softmax_with_temperature(logits[b, 1, v], temperature[b])          -> probs[b, 1, v]
    argsort_probs(probs[b, v])                                           -> (sorted_probs, sorted_ids i32)
    sample_with_top_p(sorted_probs, sorted_ids, uniform[n], sample_idx[n] i32, top_p[b]) -> ids[n] i32
    apply_penalty_inplace(logits[b, v], seq_ids[s], pos2seq[t], token_ids[t], token_cnt[t], penalties[s, 3])
    apply_logit_bias_inplace(logits[b, v], pos2seq[t], token_ids[t], bias[t])
    apply_bitmask_inplace(logits[b, v], seq_ids[s], bitmask[b, ceil(v / 32)])
    argmax_logits(logits[b, 1, v]) -> ids[b] i32     (WebGPU only: greedy decoding's token, the project's own loop)

Example::

    from webllm_widget.compile.model_lib import build_model_library
    lib = build_model_library(cfg, "q4f32_1")            # cached by content hash
    lib.path  # .../model-libs/<hash>/model.wasm
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tvm
from tvm import relax, tirx
from tvm.relax.frontend.nn.llm.kv_cache import RopeMode, TIRPagedKVCache
from tvm.script import tirx as T

from .arch import registry
from .attention import UNBOUNDED_WINDOW, softcap_attention, use_windowed_attention
from .keys import ABI_VERSION  # noqa: F401  (the library's ABI version, part of its _metadata and key)
from .quant.modes import Quantization, as_quantization
from .quant.nn import expected_params, quantize_module

if TYPE_CHECKING:  # pragma: no cover
    from .build import Library


def webgpu_target() -> tvm.target.Target:
    return tvm.target.Target({"kind": "webgpu"}, host={"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"})


def _target(target: Any) -> tvm.target.Target:
    if isinstance(target, tvm.target.Target):
        return target
    if target in ("webgpu", None):
        return webgpu_target()
    if target in ("llvm", "cpu"):
        return tvm.target.Target({"kind": "llvm"})
    return tvm.target.Target(target)


@dataclasses.dataclass
class ExportedModel:
    """The Relax module with every ABI function, before compilation."""

    mod: tvm.IRModule
    params: list[dict[str, Any]]  # name, shape, dtype, in the order the functions take them
    metadata: dict[str, Any]
    #: TIR build options this model needs (``tvm.transform.PassContext`` config); see :func:`_tir_config`
    tir_config: dict[str, Any] = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Logit processing and sampling kernels (hand-written TIR; one thread per token or per sample).
#
# Each kernel is written once over a :class:`_Nest`: on a GPU its outer loops are bound to workgroups and
# threads and its scratch values live in registers; on the CPU the same loops run in order (one "thread"
# per workgroup) and the scratch values are plain buffers.


@dataclasses.dataclass(frozen=True)
class _Nest:
    """How a kernel's loops and scratch buffers are laid out on one target."""

    gpu: bool

    def par(self, extent: Any, thread: str):
        """A loop bound to ``thread`` (``"blockIdx.x"``/``"threadIdx.x"``) on a GPU, a serial loop on the CPU."""
        return T.thread_binding(extent, thread) if self.gpu else T.serial(extent)

    def threads(self, n: int) -> int:
        """Threads per workgroup: ``n`` on a GPU, 1 on the CPU (the workgroup loop then walks every element)."""
        return n if self.gpu else 1

    @property
    def scratch(self) -> str:
        """Storage scope of a kernel's per-thread scratch values."""
        return "local" if self.gpu else "global"


def _apply_logit_bias(nest: _Nest) -> tirx.PrimFunc:
    tx = nest.threads(64)

    @T.prim_func(s_tir=True)
    def apply_logit_bias_inplace(var_logits: T.handle, var_pos2seq: T.handle, var_ids: T.handle, var_bias: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, v, t = T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (b, v), "float32")
        pos2seq = T.match_buffer(var_pos2seq, (t,), "int32")
        ids = T.match_buffer(var_ids, (t,), "int32")
        bias = T.match_buffer(var_bias, (t,), "float32")
        for bx in nest.par((t + tx - 1) // tx, "blockIdx.x"):
            for th in nest.par(tx, "threadIdx.x"):
                with T.sblock("bias"):
                    i = T.axis.spatial(t, bx * tx + th)
                    T.where(bx * tx + th < t)
                    logits[pos2seq[i], ids[i]] = logits[pos2seq[i], ids[i]] + bias[i]

    return apply_logit_bias_inplace


def _apply_penalty(nest: _Nest) -> tirx.PrimFunc:
    tx = nest.threads(64)
    # penalties[s] = (presence, frequency, repetition); OpenAI-style subtraction, then CTRL-style scaling.

    @T.prim_func(s_tir=True)
    def apply_penalty_inplace(var_logits: T.handle, var_seq_ids: T.handle, var_pos2seq: T.handle, var_ids: T.handle,
                              var_cnt: T.handle, var_pen: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, v, t, s = T.int32(), T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (b, v), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (s,), "int32")
        pos2seq = T.match_buffer(var_pos2seq, (t,), "int32")
        ids = T.match_buffer(var_ids, (t,), "int32")
        cnt = T.match_buffer(var_cnt, (t,), "int32")
        pen = T.match_buffer(var_pen, (s, 3), "float32")
        for bx in nest.par((t + tx - 1) // tx, "blockIdx.x"):
            for th in nest.par(tx, "threadIdx.x"):
                with T.sblock("penalty"):
                    i = T.axis.spatial(t, bx * tx + th)
                    T.where(bx * tx + th < t)
                    T.reads(logits[0:b, 0:v], seq_ids[0:s], pos2seq[i], ids[i], cnt[i], pen[0:s, 0:3])
                    T.writes(logits[0:b, 0:v])
                    x = logits[seq_ids[pos2seq[i]], ids[i]] - pen[pos2seq[i], 0] - T.Cast("float32", cnt[i]) * pen[pos2seq[i], 1]
                    logits[seq_ids[pos2seq[i]], ids[i]] = T.if_then_else(x < T.float32(0), x * pen[pos2seq[i], 2],
                                                                         x / pen[pos2seq[i], 2])

    return apply_penalty_inplace


def _apply_bitmask(nest: _Nest) -> tirx.PrimFunc:
    tx = nest.threads(64)

    @T.prim_func(s_tir=True)
    def apply_bitmask_inplace(var_logits: T.handle, var_seq_ids: T.handle, var_mask: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, v, s = T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (b, v), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (s,), "int32")
        mask = T.match_buffer(var_mask, (b, (v + 31) // 32), "int32")
        for bx in nest.par((s * v + tx - 1) // tx, "blockIdx.x"):
            for th in nest.par(tx, "threadIdx.x"):
                with T.sblock("mask"):
                    si = T.axis.spatial(s, (bx * tx + th) // v)
                    vi = T.axis.spatial(v, (bx * tx + th) % v)
                    T.where(bx * tx + th < s * v)
                    logits[seq_ids[si], vi] = T.if_then_else(
                        T.bitwise_and(T.shift_right(mask[seq_ids[si], vi // 32], vi % 32), 1) == 1,
                        logits[seq_ids[si], vi], T.min_value("float32"))

    return apply_bitmask_inplace


#: How many of the most likely tokens ``argsort_probs`` puts first, in descending order.
TOP_SORTED = 32


def _top_first_kernel(nest: _Nest) -> tirx.PrimFunc:
    """A "top-first" argsort: the ``TOP_SORTED`` most likely tokens in descending order, then the rest in id order.

    A full sort of the vocabulary on every token is the costliest part of sampling on a software
    adapter (TVM's GPU sort also needs ``blockIdx.z``, which WebGPU lacks). Sampling only needs
    the order for the top-p cut, so ``sample_with_top_p`` below is exact whenever the nucleus lies
    within the sorted head, and for ``top_p >= 1``; a larger nucleus samples the whole distribution.
    Ties keep the lower token id first. One thread per row: each of the K passes selects the next
    token after the previous one in (probability descending, id ascending) order. The CPU library
    uses it; GPUs use the three passes of :func:`_top_first_gpu_kernels` (same output).
    """
    @T.prim_func(s_tir=True)
    def top_first_sort(var_probs: T.handle, var_out_p: T.handle, var_out_i: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, v = T.int32(), T.int32()
        probs = T.match_buffer(var_probs, (b, v), "float32")
        out_p = T.match_buffer(var_out_p, (b, v), "float32")
        out_i = T.match_buffer(var_out_i, (b, v), "int32")
        for bx in nest.par(b, "blockIdx.x"):
            for th in nest.par(1, "threadIdx.x"):
                with T.sblock("sort"):
                    row = T.axis.spatial(b, bx + th)
                    T.reads(probs[row, 0:v])
                    T.writes(out_p[row, 0:v], out_i[row, 0:v])
                    best_p = T.sblock_alloc_buffer((1,), "float32", scope=nest.scratch)
                    prev_p = T.sblock_alloc_buffer((1,), "float32", scope=nest.scratch)
                    best_i = T.sblock_alloc_buffer((1,), "int32", scope=nest.scratch)
                    prev_i = T.sblock_alloc_buffer((1,), "int32", scope=nest.scratch)
                    c = T.sblock_alloc_buffer((1,), "int32", scope=nest.scratch)
                    prev_p[0] = T.float32(2)
                    prev_i[0] = -1
                    for r in T.serial(T.min(v, TOP_SORTED)):
                        best_p[0] = T.float32(-1)
                        best_i[0] = -1
                        for j in T.serial(v):
                            if (probs[row, j] < prev_p[0] or (probs[row, j] == prev_p[0] and j > prev_i[0])) and probs[row, j] > best_p[0]:
                                best_p[0] = probs[row, j]
                                best_i[0] = j
                        out_p[row, r] = best_p[0]
                        out_i[row, r] = best_i[0]
                        prev_p[0] = best_p[0]
                        prev_i[0] = best_i[0]
                    c[0] = T.min(v, TOP_SORTED)
                    for j in T.serial(v):
                        if probs[row, j] < prev_p[0] or (probs[row, j] == prev_p[0] and j > prev_i[0]):
                            out_p[row, c[0]] = probs[row, j]
                            out_i[row, c[0]] = j
                            c[0] = c[0] + 1

    return top_first_sort


#: Partitions the GPU "top-first" argsort splits the vocabulary into (one thread each), and threads per workgroup.
_SORT_PARTS, _SORT_WG = 64, 4
#: Slices (one thread each) that write the tokens after the sorted head, and threads per workgroup (R >= TOP_SORTED).
_REST_PARTS, _REST_WG = 256, 64


def _top_first_gpu_kernels() -> tuple[tirx.PrimFunc, tirx.PrimFunc, tirx.PrimFunc]:
    """The GPU "top-first" argsort in three passes; same output as :func:`_top_first_kernel`.

    The single-thread version makes ``TOP_SORTED`` passes over the vocabulary: 108 ms per token
    on SwiftShader for SmolLM2's 49,152 tokens (14% of a decode token). Here ``_SORT_PARTS``
    threads each keep the ``TOP_SORTED`` best of their slice in one pass (insertion into a sorted
    list, rarely taken once the list is full), then one thread merges the slices' lists into the
    head, then ``_REST_PARTS`` threads write the rest in id order, each its own slice from the place
    its slice starts at (its start minus the head tokens before it, after the head). Writing the rest
    from one thread took 8.7 ms of a 23 ms decode step on an H200 (bench/gpu_device.py kernels).
    Ties keep the lower id first in both passes: elements of equal probability reach each list in
    ascending id order and a newcomer goes after its equals.
    """
    K, P, WG, R, RWG = TOP_SORTED, _SORT_PARTS, _SORT_WG, _REST_PARTS, _REST_WG

    @T.prim_func(s_tir=True)
    def top_first_candidates(var_probs: T.handle, var_cp: T.handle, var_ci: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, v = T.int32(), T.int32()
        probs = T.match_buffer(var_probs, (b, v), "float32")
        cand_p = T.match_buffer(var_cp, (b, P, K), "float32")
        cand_i = T.match_buffer(var_ci, (b, P, K), "int32")
        for bx in T.thread_binding(b * (P // WG), "blockIdx.x"):
            for th in T.thread_binding(WG, "threadIdx.x"):
                with T.sblock("candidates"):
                    T.reads(probs[0:b, 0:v])
                    T.writes(cand_p[0:b, 0:P, 0:K], cand_i[0:b, 0:P, 0:K])
                    lp = T.sblock_alloc_buffer((K,), "float32", scope="local")
                    li = T.sblock_alloc_buffer((K,), "int32", scope="local")
                    cnt = T.sblock_alloc_buffer((1,), "int32", scope="local")
                    pos = T.sblock_alloc_buffer((1,), "int32", scope="local")
                    row: T.let[T.int32] = (bx * WG + th) // P
                    part: T.let[T.int32] = (bx * WG + th) % P
                    chunk: T.let[T.int32] = (v + P - 1) // P
                    start: T.let[T.int32] = T.min(v, part * chunk)
                    stop: T.let[T.int32] = T.min(v, start + chunk)
                    cnt[0] = 0
                    for jj in T.serial(stop - start):
                        if cnt[0] < K or probs[row, start + jj] > lp[K - 1]:
                            pos[0] = T.min(cnt[0], K - 1)
                            while pos[0] > 0 and lp[T.max(pos[0] - 1, 0)] < probs[row, start + jj]:
                                lp[pos[0]] = lp[pos[0] - 1]
                                li[pos[0]] = li[pos[0] - 1]
                                pos[0] = pos[0] - 1
                            lp[pos[0]] = probs[row, start + jj]
                            li[pos[0]] = start + jj
                            cnt[0] = T.min(cnt[0] + 1, K)
                    for t in T.serial(K):
                        cand_p[row, part, t] = T.if_then_else(t < cnt[0], lp[t], T.float32(-1))
                        cand_i[row, part, t] = T.if_then_else(t < cnt[0], li[t], -1)

    @T.prim_func(s_tir=True)
    def top_first_merge(var_cp: T.handle, var_ci: T.handle, var_top_p: T.handle, var_top_i: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b = T.int32()
        cand_p = T.match_buffer(var_cp, (b, P, K), "float32")
        cand_i = T.match_buffer(var_ci, (b, P, K), "int32")
        top_p = T.match_buffer(var_top_p, (b, K), "float32")
        top_i = T.match_buffer(var_top_i, (b, K), "int32")
        for bx in T.thread_binding(b, "blockIdx.x"):
            for th in T.thread_binding(1, "threadIdx.x"):
                with T.sblock("merge"):
                    row = T.axis.spatial(b, bx + th)
                    T.reads(cand_p[row, 0:P, 0:K], cand_i[row, 0:P, 0:K])
                    T.writes(top_p[row, 0:K], top_i[row, 0:K])
                    lp = T.sblock_alloc_buffer((K,), "float32", scope="local")
                    li = T.sblock_alloc_buffer((K,), "int32", scope="local")
                    cnt = T.sblock_alloc_buffer((1,), "int32", scope="local")
                    pos = T.sblock_alloc_buffer((1,), "int32", scope="local")
                    cnt[0] = 0
                    for q in T.serial(P * K):
                        if cand_p[row, q // K, q % K] >= T.float32(0) and (
                                cnt[0] < K or cand_p[row, q // K, q % K] > lp[K - 1]):
                            pos[0] = T.min(cnt[0], K - 1)
                            while pos[0] > 0 and lp[T.max(pos[0] - 1, 0)] < cand_p[row, q // K, q % K]:
                                lp[pos[0]] = lp[pos[0] - 1]
                                li[pos[0]] = li[pos[0] - 1]
                                pos[0] = pos[0] - 1
                            lp[pos[0]] = cand_p[row, q // K, q % K]
                            li[pos[0]] = cand_i[row, q // K, q % K]
                            cnt[0] = T.min(cnt[0] + 1, K)
                    for t in T.serial(K):
                        top_p[row, t] = T.if_then_else(t < cnt[0], lp[t], T.float32(-1))
                        top_i[row, t] = T.if_then_else(t < cnt[0], li[t], -1)

    @T.prim_func(s_tir=True)
    def top_first_rest(var_probs: T.handle, var_top_p: T.handle, var_top_i: T.handle, var_out_p: T.handle,
                       var_out_i: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, v = T.int32(), T.int32()
        probs = T.match_buffer(var_probs, (b, v), "float32")
        top_p = T.match_buffer(var_top_p, (b, K), "float32")
        top_i = T.match_buffer(var_top_i, (b, K), "int32")
        out_p = T.match_buffer(var_out_p, (b, v), "float32")
        out_i = T.match_buffer(var_out_i, (b, v), "int32")
        for bx in T.thread_binding(b * (R // RWG), "blockIdx.x"):
            for th in T.thread_binding(RWG, "threadIdx.x"):
                with T.sblock("rest"):
                    T.reads(probs[0:b, 0:v], top_p[0:b, 0:K], top_i[0:b, 0:K])
                    T.writes(out_p[0:b, 0:v], out_i[0:b, 0:v])
                    c = T.sblock_alloc_buffer((1,), "int32", scope="local")
                    row: T.let[T.int32] = (bx * RWG + th) // R
                    part: T.let[T.int32] = (bx * RWG + th) % R
                    n: T.let[T.int32] = T.min(v, K)
                    chunk: T.let[T.int32] = (v + R - 1) // R
                    start: T.let[T.int32] = T.min(v, part * chunk)
                    stop: T.let[T.int32] = T.min(v, start + chunk)
                    # This slice's first free place: the top list, then every earlier slice's rest.
                    c[0] = n + start
                    for t in T.serial(n):
                        if top_i[row, t] < start:
                            c[0] = c[0] - 1
                    if part < n:
                        out_p[row, part] = top_p[row, part]
                        out_i[row, part] = top_i[row, part]
                    for jj in T.serial(stop - start):
                        if probs[row, start + jj] < top_p[row, n - 1] or (
                                probs[row, start + jj] == top_p[row, n - 1] and start + jj > top_i[row, n - 1]):
                            out_p[row, c[0]] = probs[row, start + jj]
                            out_i[row, c[0]] = start + jj
                            c[0] = c[0] + 1

    return top_first_candidates, top_first_merge, top_first_rest


#: Tokens per workgroup of the hardware argsort's first pass (ranked in shared memory), its threads, and the
#: threads per workgroup of its merge.
_RANK_CHUNK, _RANK_WG, _MERGE_WG = 512, 256, 256


def _top_first_rank_kernels() -> tuple[tirx.PrimFunc, tirx.PrimFunc]:
    """The first two passes of the "top-first" argsort for hardware GPUs, by ranks instead of insertion lists.

    :func:`_top_first_gpu_kernels`' passes give each of 64 threads a 768-token slice to walk one token at a time
    (and the merge one thread for all 2,048 candidates): 173 + 261 us of a decode step on an H200, every load
    waiting on the last. Here a workgroup takes ``_RANK_CHUNK`` tokens into shared memory and each thread counts,
    for its tokens, how many of the chunk come before them in (probability descending, id ascending) order: that
    count is the token's place, and the ``TOP_SORTED`` first places are the chunk's candidates, in order. The merge
    gives each candidate (a thread each) its place among all of them: the sum over chunks of how many of the chunk's
    sorted candidates come before it. Only chunks whose head (first candidate) comes before it can add any, so the
    heads pass through shared memory a workgroup's worth at a time and a binary search in the chunk's list counts
    the rest; a candidate stops searching once ``TOP_SORTED`` come before it, so it makes at most ``TOP_SORTED``
    searches (counting every candidate against every other, 8,032 for a 128k vocabulary, took 340 us of an H100
    decode step). The order is a strict total one (ties go by id), so
    places never collide and the output equals the insertion passes' (``top_first_rest`` then writes the rest).
    Chunks with fewer tokens than ``TOP_SORTED`` leave their unused places at probability -1, which the merge skips.
    """
    K, CH, WG, MWG = TOP_SORTED, _RANK_CHUNK, _RANK_WG, _MERGE_WG
    per = CH // WG
    half, steps = K // 2, (K // 2).bit_length()  # the binary search's first step, and its steps

    @T.prim_func(s_tir=True)
    def top_first_chunk_rank(var_probs: T.handle, var_cp: T.handle, var_ci: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, v, nc = T.int32(), T.int32(), T.int32()
        probs = T.match_buffer(var_probs, (b, v), "float32")
        cand_p = T.match_buffer(var_cp, (b, nc, K), "float32")
        cand_i = T.match_buffer(var_ci, (b, nc, K), "int32")
        for bx in T.thread_binding(b * nc, "blockIdx.x"):
            for th in T.thread_binding(WG, "threadIdx.x"):
                with T.sblock("chunk_rank"):
                    T.reads(probs[0:b, 0:v])
                    T.writes(cand_p[0:b, 0:nc, 0:K], cand_i[0:b, 0:nc, 0:K])
                    sp = T.sblock_alloc_buffer((CH,), "float32", scope="shared")
                    mine = T.sblock_alloc_buffer((per,), "float32", scope="local")
                    rank = T.sblock_alloc_buffer((per,), "int32", scope="local")
                    cur = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    row: T.let[T.int32] = bx // nc
                    part: T.let[T.int32] = bx % nc
                    start: T.let[T.int32] = part * CH
                    n: T.let[T.int32] = T.min(CH, v - start)
                    for e in T.unroll(per):
                        sp[e * WG + th] = T.if_then_else(e * WG + th < n, probs[row, T.min(start + e * WG + th, v - 1)],
                                                         T.float32(-1))
                    if th < K and th >= n:  # places no token of a short chunk takes (places are < n)
                        cand_p[row, part, th] = T.float32(-1)
                        cand_i[row, part, th] = -1
                    T.tvm_storage_sync("shared")
                    for e in T.unroll(per):
                        mine[e] = sp[e * WG + th]
                        rank[e] = 0
                    for o in T.serial(CH):
                        cur[0] = sp[o]
                        for e in T.unroll(per):
                            rank[e] = rank[e] + T.if_then_else(
                                cur[0] > mine[e] or (cur[0] == mine[e] and o < e * WG + th), 1, 0)
                    for e in T.unroll(per):
                        rk: T.let[T.int32] = rank[e]
                        if e * WG + th < n and rk < K:
                            cand_p[row, part, rk] = mine[e]
                            cand_i[row, part, rk] = start + e * WG + th

    @T.prim_func(s_tir=True)
    def top_first_merge_rank(var_cp: T.handle, var_ci: T.handle, var_top_p: T.handle, var_top_i: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, nq = T.int32(), T.int32()
        cand_p = T.match_buffer(var_cp, (b, nq), "float32")
        cand_i = T.match_buffer(var_ci, (b, nq), "int32")
        top_p = T.match_buffer(var_top_p, (b, K), "float32")
        top_i = T.match_buffer(var_top_i, (b, K), "int32")
        for bx in T.thread_binding(b * T.ceildiv(nq, MWG), "blockIdx.x"):
            for th in T.thread_binding(MWG, "threadIdx.x"):
                with T.sblock("merge_rank"):
                    T.reads(cand_p[0:b, 0:nq], cand_i[0:b, 0:nq])
                    T.writes(top_p[0:b, 0:K], top_i[0:b, 0:K])
                    hp = T.sblock_alloc_buffer((MWG,), "float32", scope="shared")
                    hi = T.sblock_alloc_buffer((MWG,), "int32", scope="shared")
                    r = T.sblock_alloc_buffer((1,), "int32", scope="local")
                    lo = T.sblock_alloc_buffer((1,), "int32", scope="local")
                    cur = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    cid = T.sblock_alloc_buffer((1,), "int32", scope="local")
                    row: T.let[T.int32] = bx // T.ceildiv(nq, MWG)
                    q: T.let[T.int32] = (bx % T.ceildiv(nq, MWG)) * MWG + th
                    nc: T.let[T.int32] = nq // K
                    p: T.let[T.float32] = T.if_then_else(q < nq, cand_p[row, T.min(q, nq - 1)], T.float32(-1))
                    i: T.let[T.int32] = T.if_then_else(q < nq, cand_i[row, T.min(q, nq - 1)], -1)
                    r[0] = 0
                    # the chunks' heads pass through shared memory, a workgroup's worth at a time
                    for tile in T.serial(T.ceildiv(nc, MWG)):
                        hp[th] = T.if_then_else(tile * MWG + th < nc,
                                                cand_p[row, T.min(tile * MWG + th, nc - 1) * K], T.float32(-1))
                        hi[th] = T.if_then_else(tile * MWG + th < nc,
                                                cand_i[row, T.min(tile * MWG + th, nc - 1) * K], -1)
                        T.tvm_storage_sync("shared")
                        for o in T.serial(MWG):
                            cur[0] = hp[o]
                            cid[0] = hi[o]
                            if r[0] < K and (cur[0] > p or (cur[0] == p and cid[0] < i)):
                                # the head precedes: count the chunk's candidates that do (its list is sorted)
                                lo[0] = 1
                                for s in T.unroll(steps):
                                    at: T.let[T.int32] = (tile * MWG + o) * K + lo[0] + (half >> s) - 1
                                    if lo[0] + (half >> s) <= K and (
                                            cand_p[row, T.min(at, nq - 1)] > p or (
                                                cand_p[row, T.min(at, nq - 1)] == p and cand_i[row, T.min(at, nq - 1)] < i)):
                                        lo[0] = lo[0] + (half >> s)
                                r[0] = r[0] + lo[0]
                        T.tvm_storage_sync("shared")
                    rk: T.let[T.int32] = r[0]
                    if p >= T.float32(0) and rk < K:
                        top_p[row, rk] = p
                        top_i[row, rk] = i

    return top_first_chunk_rank, top_first_merge_rank


#: Threads per workgroup of the hardware argsort's last pass (a token each).
_REST_TOKEN_WG = 256


def _top_first_rest_by_token() -> tirx.PrimFunc:
    """The last pass of the "top-first" argsort for hardware GPUs: a thread per token; same output as
    :func:`_top_first_gpu_kernels`' ``top_first_rest``.

    A token after the head goes to place ``K + id - (head tokens of lower id)``: the rest keeps id order and skips
    the head's ids. A token is in the head exactly when it does not come after the head's last token (the order is
    a strict total one), so each thread decides and places its own token from the head alone (read into shared
    memory once a workgroup); the head's own ``K`` places are copied by the first threads. ``top_first_rest``
    gives each of 256 threads a slice of the vocabulary to walk, one dependent store after another: 220-260 us a
    decode step for a 128k vocabulary on an H100.
    """
    K, WG = TOP_SORTED, _REST_TOKEN_WG

    @T.prim_func(s_tir=True)
    def top_first_rest_token(var_probs: T.handle, var_top_p: T.handle, var_top_i: T.handle, var_out_p: T.handle,
                             var_out_i: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, v = T.int32(), T.int32()
        probs = T.match_buffer(var_probs, (b, v), "float32")
        top_p = T.match_buffer(var_top_p, (b, K), "float32")
        top_i = T.match_buffer(var_top_i, (b, K), "int32")
        out_p = T.match_buffer(var_out_p, (b, v), "float32")
        out_i = T.match_buffer(var_out_i, (b, v), "int32")
        for bx in T.thread_binding(b * T.ceildiv(v, WG), "blockIdx.x"):
            for th in T.thread_binding(WG, "threadIdx.x"):
                with T.sblock("rest_token"):
                    T.reads(probs[0:b, 0:v], top_p[0:b, 0:K], top_i[0:b, 0:K])
                    T.writes(out_p[0:b, 0:v], out_i[0:b, 0:v])
                    hi = T.sblock_alloc_buffer((K,), "int32", scope="shared")
                    c = T.sblock_alloc_buffer((1,), "int32", scope="local")
                    row: T.let[T.int32] = bx // T.ceildiv(v, WG)
                    j: T.let[T.int32] = (bx % T.ceildiv(v, WG)) * WG + th
                    n: T.let[T.int32] = T.min(v, K)
                    if th < K:
                        hi[th] = T.if_then_else(th < n, top_i[row, T.min(th, n - 1)], v)
                    T.tvm_storage_sync("shared")
                    if j < n:
                        out_p[row, j] = top_p[row, j]
                        out_i[row, j] = top_i[row, j]
                    pj: T.let[T.float32] = probs[row, T.min(j, v - 1)]
                    last_p: T.let[T.float32] = top_p[row, n - 1]
                    last_i: T.let[T.int32] = top_i[row, n - 1]
                    if j < v and (pj < last_p or (pj == last_p and j > last_i)):
                        c[0] = 0
                        for t in T.serial(K):
                            c[0] = c[0] + T.if_then_else(hi[t] < j, 1, 0)
                        out_p[row, n + j - c[0]] = pj
                        out_i[row, n + j - c[0]] = j

    return top_first_rest_token


#: Slices of the vocabulary the hardware softmax reduces in its first pass (a workgroup each), and its threads.
_SM_PARTS, _SM_WG = 64, 256


def _softmax_gpu_kernels() -> tuple[tirx.PrimFunc, tirx.PrimFunc]:
    """``softmax(logits / temperature)`` over the vocabulary for hardware GPUs, in two passes.

    Relax's softmax, scheduled by dlight's GeneralReduction, reduces each row in one workgroup: 561 us per decode
    step for SmolLM2's 49,152 logits on an H200 (bench/gpu_device.py kernels), a tenth of the step's GPU time.
    Here ``_SM_PARTS`` workgroups each reduce a slice to its maximum and its sum of ``exp(x - max)`` (tree
    reductions in shared memory), and the second pass, a thread per logit, combines the slices' pairs and writes
    ``exp(x - max) / sum``: the same function up to the order of the sums.
    """
    P, WG = _SM_PARTS, _SM_WG
    steps = WG.bit_length() - 1

    @T.prim_func(s_tir=True)
    def softmax_parts(var_logits: T.handle, var_t: T.handle, var_m: T.handle, var_s: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, v = T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (b, 1, v), "float32")
        temperature = T.match_buffer(var_t, (b,), "float32")
        part_m = T.match_buffer(var_m, (b, P), "float32")
        part_s = T.match_buffer(var_s, (b, P), "float32")
        for bx in T.thread_binding(b * P, "blockIdx.x"):
            for th in T.thread_binding(WG, "threadIdx.x"):
                with T.sblock("parts"):
                    T.reads(logits[0:b, 0, 0:v], temperature[0:b])
                    T.writes(part_m[0:b, 0:P], part_s[0:b, 0:P])
                    red = T.sblock_alloc_buffer((WG,), "float32", scope="shared")
                    acc = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    mx = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    row: T.let[T.int32] = bx // P
                    part: T.let[T.int32] = bx % P
                    chunk: T.let[T.int32] = (v + P - 1) // P
                    start: T.let[T.int32] = T.min(v, part * chunk)
                    stop: T.let[T.int32] = T.min(v, start + chunk)
                    acc[0] = T.float32(-3.0e38)
                    for j in T.serial((stop - start + WG - 1) // WG):
                        if start + j * WG + th < stop:
                            acc[0] = T.max(acc[0], logits[row, 0, start + j * WG + th] / temperature[row])
                    red[th] = acc[0]
                    T.tvm_storage_sync("shared")
                    for k in T.unroll(steps):
                        if th < (WG >> (k + 1)):
                            red[th] = T.max(red[th], red[th + (WG >> (k + 1))])
                        T.tvm_storage_sync("shared")
                    mx[0] = red[0]
                    T.tvm_storage_sync("shared")
                    acc[0] = T.float32(0)
                    for j in T.serial((stop - start + WG - 1) // WG):
                        if start + j * WG + th < stop:
                            acc[0] = acc[0] + T.exp(logits[row, 0, start + j * WG + th] / temperature[row] - mx[0])
                    red[th] = acc[0]
                    T.tvm_storage_sync("shared")
                    for k in T.unroll(steps):
                        if th < (WG >> (k + 1)):
                            red[th] = red[th] + red[th + (WG >> (k + 1))]
                        T.tvm_storage_sync("shared")
                    if th == 0:
                        part_m[row, part] = mx[0]
                        part_s[row, part] = red[0]

    @T.prim_func(s_tir=True)
    def softmax_normalize(var_logits: T.handle, var_t: T.handle, var_m: T.handle, var_s: T.handle, var_out: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, v = T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (b, 1, v), "float32")
        temperature = T.match_buffer(var_t, (b,), "float32")
        part_m = T.match_buffer(var_m, (b, P), "float32")
        part_s = T.match_buffer(var_s, (b, P), "float32")
        out = T.match_buffer(var_out, (b, 1, v), "float32")
        for bx in T.thread_binding(T.ceildiv(b * v, WG), "blockIdx.x"):
            for th in T.thread_binding(WG, "threadIdx.x"):
                with T.sblock("normalize"):
                    T.reads(logits[0:b, 0, 0:v], temperature[0:b], part_m[0:b, 0:P], part_s[0:b, 0:P])
                    T.writes(out[0:b, 0, 0:v])
                    mx = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    tot = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    g: T.let[T.int32] = bx * WG + th
                    if g < b * v:
                        row: T.let[T.int32] = g // v
                        mx[0] = T.float32(-3.0e38)
                        for q in T.serial(P):
                            mx[0] = T.max(mx[0], part_m[row, q])
                        tot[0] = T.float32(0)
                        for q in T.serial(P):
                            tot[0] = tot[0] + part_s[row, q] * T.exp(part_m[row, q] - mx[0])
                        out[row, 0, g % v] = T.exp(logits[row, 0, g % v] / temperature[row] - mx[0]) / tot[0]

    return softmax_parts, softmax_normalize


#: Threads of the greedy argmax's workgroups, and logits each thread of its first pass reads.
_AM_WG, _AM_PER = 256, 8


def _argmax_gpu_kernels() -> tuple[tirx.PrimFunc, tirx.PrimFunc]:
    """Greedy decoding's token: the id of the largest logit, ties to the lowest id, in two passes.

    Temperature 0 needs neither the softmax nor the top-first argsort (``softmax_with_temperature`` at web-llm's
    floor of 1e-6, ``argsort_probs`` and ``sample_with_top_p``: ~600 us a token for a 128k vocabulary on an H100).
    The first pass gives each workgroup ``_AM_WG * _AM_PER`` logits (each thread ``_AM_PER``, neighbouring threads
    neighbouring logits) and reduces them to one (value, id) pair in shared memory (16 threads 16 pairs each, then
    one thread the 16: pairs of a value and an id cannot be reduced in place, level by level, within TVM's
    barrier rules); the second, a workgroup a row,
    reduces the pairs. Every comparison takes the larger value, and of equal values the lower id, so the result is
    the first maximum whatever the order of the reductions. A NaN logit never wins a comparison.
    """
    WG, PER = _AM_WG, _AM_PER
    G = 16  # WG == G * G

    @T.macro
    def take(bv, bi, value, at):
        """The pair (``value``, ``at``) into ``bv[0]``, ``bi[0]`` where it comes first (``bv[1]``, ``bi[1]`` hold it
        while compared)."""
        bv[1] = value
        bi[1] = at
        if bv[1] > bv[0] or (bv[1] == bv[0] and bi[1] < bi[0]):
            bv[0] = bv[1]
            bi[0] = bi[1]

    @T.macro
    def first_of_workgroup(rv, ri, gv, gi, bv, bi, th):
        """Every thread's pair (``bv[0]``, ``bi[0]``) through shared memory, G threads taking G pairs each (their
        results in ``gv``, ``gi``: a buffer of its own, so no barrier falls inside the condition), then thread 0
        those G: the workgroup's first maximum ends in thread 0's ``bv[0]``, ``bi[0]``."""
        rv[th] = bv[0]
        ri[th] = bi[0]
        T.tvm_storage_sync("shared")
        if th < G:
            for j in T.unroll(G):
                take(bv, bi, rv[th * G + j], ri[th * G + j])
            gv[th] = bv[0]
            gi[th] = bi[0]
        T.tvm_storage_sync("shared")
        if th == 0:
            for j in T.serial(G):
                take(bv, bi, gv[j], gi[j])

    @T.prim_func(s_tir=True)
    def argmax_parts(var_logits: T.handle, var_pv: T.handle, var_pi: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, v, np_ = T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (b, 1, v), "float32")
        part_v = T.match_buffer(var_pv, (b, np_), "float32")
        part_i = T.match_buffer(var_pi, (b, np_), "int32")
        for bx in T.thread_binding(b * np_, "blockIdx.x"):
            for th in T.thread_binding(WG, "threadIdx.x"):
                with T.sblock("argmax_parts"):
                    T.reads(logits[0:b, 0, 0:v])
                    T.writes(part_v[0:b, 0:np_], part_i[0:b, 0:np_])
                    rv = T.sblock_alloc_buffer((WG,), "float32", scope="shared")
                    ri = T.sblock_alloc_buffer((WG,), "int32", scope="shared")
                    gv = T.sblock_alloc_buffer((G,), "float32", scope="shared")
                    gi = T.sblock_alloc_buffer((G,), "int32", scope="shared")
                    bv = T.sblock_alloc_buffer((2,), "float32", scope="local")
                    bi = T.sblock_alloc_buffer((2,), "int32", scope="local")
                    row: T.let[T.int32] = bx // np_
                    start: T.let[T.int32] = (bx % np_) * (WG * PER)
                    bv[0] = T.min_value("float32")
                    bi[0] = v
                    for e in T.unroll(PER):
                        at: T.let[T.int32] = start + e * WG + th
                        if at < v:
                            take(bv, bi, logits[row, 0, at], at)
                    first_of_workgroup(rv, ri, gv, gi, bv, bi, th)
                    if th == 0:
                        part_v[row, bx % np_] = bv[0]
                        part_i[row, bx % np_] = bi[0]

    @T.prim_func(s_tir=True)
    def argmax_final(var_pv: T.handle, var_pi: T.handle, var_out: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, np_ = T.int32(), T.int32()
        part_v = T.match_buffer(var_pv, (b, np_), "float32")
        part_i = T.match_buffer(var_pi, (b, np_), "int32")
        out = T.match_buffer(var_out, (b,), "int32")
        for bx in T.thread_binding(b, "blockIdx.x"):
            for th in T.thread_binding(WG, "threadIdx.x"):
                with T.sblock("argmax_final"):
                    T.reads(part_v[0:b, 0:np_], part_i[0:b, 0:np_])
                    T.writes(out[0:b])
                    rv = T.sblock_alloc_buffer((WG,), "float32", scope="shared")
                    ri = T.sblock_alloc_buffer((WG,), "int32", scope="shared")
                    gv = T.sblock_alloc_buffer((G,), "float32", scope="shared")
                    gi = T.sblock_alloc_buffer((G,), "int32", scope="shared")
                    bv = T.sblock_alloc_buffer((2,), "float32", scope="local")
                    bi = T.sblock_alloc_buffer((2,), "int32", scope="local")
                    bv[0] = T.min_value("float32")
                    bi[0] = 2147483647
                    for j in T.serial(T.ceildiv(np_, WG)):
                        if j * WG + th < np_:
                            take(bv, bi, part_v[bx, j * WG + th], part_i[bx, j * WG + th])
                    first_of_workgroup(rv, ri, gv, gi, bv, bi, th)
                    if th == 0:
                        out[bx] = bi[0]

    return argmax_parts, argmax_final


def _sample_top_p(nest: _Nest) -> tirx.PrimFunc:
    """Nucleus sampling from ``argsort_probs``' output, one thread per sample.

    Keeps the shortest prefix of the sorted head whose mass reaches ``top_p`` (at least one
    token; the whole vocabulary when the head's mass stays below ``top_p``), then picks the first
    token whose running sum exceeds ``u * mass``. Both walks stop early, so greedy decoding (one
    token with probability ~1) reads a single element.
    """

    @T.prim_func(s_tir=True)
    def sample_top_p_kernel(var_probs: T.handle, var_ids: T.handle, var_u: T.handle, var_rows: T.handle,
                            var_top_p: T.handle, var_out: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, v, n = T.int32(), T.int32(), T.int32()
        probs = T.match_buffer(var_probs, (b, v), "float32")
        ids = T.match_buffer(var_ids, (b, v), "int32")
        u = T.match_buffer(var_u, (n,), "float32")
        rows = T.match_buffer(var_rows, (n,), "int32")
        top_p = T.match_buffer(var_top_p, (b,), "float32")
        out = T.match_buffer(var_out, (n,), "int32")
        for bx in nest.par(n, "blockIdx.x"):
            for th in nest.par(1, "threadIdx.x"):
                with T.sblock("sample"):
                    i = T.axis.spatial(n, bx + th)
                    T.reads(probs[0:b, 0:v], ids[0:b, 0:v], u[i], rows[i], top_p[0:b])
                    T.writes(out[i])
                    cum = T.sblock_alloc_buffer((1,), "float32", scope=nest.scratch)
                    j = T.sblock_alloc_buffer((1,), "int32", scope=nest.scratch)
                    chosen = T.sblock_alloc_buffer((1,), "int32", scope=nest.scratch)
                    cum[0] = T.float32(0)
                    j[0] = 0
                    while j[0] < T.min(v, TOP_SORTED) and (j[0] == 0 or cum[0] < top_p[rows[i]]):
                        cum[0] = cum[0] + probs[rows[i], j[0]]
                        j[0] = j[0] + 1
                    if cum[0] < top_p[rows[i]]:
                        while j[0] < v:
                            cum[0] = cum[0] + probs[rows[i], j[0]]
                            j[0] = j[0] + 1
                    chosen[0] = j[0] - 1
                    goal = u[i] * cum[0]
                    cum[0] = T.float32(0)
                    j[0] = 0
                    while j[0] < chosen[0]:
                        cum[0] = cum[0] + probs[rows[i], j[0]]
                        if cum[0] > goal:
                            chosen[0] = j[0]
                        j[0] = j[0] + 1
                    out[i] = ids[rows[i], chosen[0]]

    return sample_top_p_kernel


def _add_sampling(bb: relax.BlockBuilder, gpu: bool, hardware: bool = False) -> None:
    """softmax_with_temperature, argsort_probs and sample_with_top_p as Relax functions. ``hardware`` (the
    schedules for hardware GPUs) takes the softmax and the argsort's passes written for many threads
    (:func:`_softmax_gpu_kernels`, :func:`_top_first_rank_kernels`, :func:`_top_first_rest_by_token`); a software
    adapter keeps the passes that suit a few CPU cores (same results). GPUs also get ``argmax_logits``."""
    b, v = tirx.Var("batch_size", "int64"), tirx.Var("vocab_size", "int64")
    n = tirx.Var("num_samples", "int64")
    hardware = gpu and hardware

    logits = relax.Var("logits", relax.TensorType([b, 1, v], "float32"))
    temperature = relax.Var("temperature", relax.TensorType([b], "float32"))
    if hardware:
        parts_func, norm_func = _softmax_gpu_kernels()
        parts_kernel = bb.add_func(parts_func, "softmax_parts")
        norm_kernel = bb.add_func(norm_func, "softmax_normalize")
    with bb.function("softmax_with_temperature", [logits, temperature]):
        with bb.dataflow():
            if hardware:
                parts = bb.emit(relax.call_tir(parts_kernel, [logits, temperature], [
                    relax.TensorType([b, _SM_PARTS], "float32"), relax.TensorType([b, _SM_PARTS], "float32")]))
                probs = bb.emit_output(relax.call_tir(norm_kernel, [logits, temperature, relax.TupleGetItem(parts, 0),
                                                                    relax.TupleGetItem(parts, 1)],
                                                      relax.TensorType([b, 1, v], "float32")))
            else:
                t = bb.emit(relax.op.reshape(temperature, [b, 1, 1]))
                probs = bb.emit_output(relax.op.nn.softmax(relax.op.divide(logits, t), axis=-1))
        bb.emit_func_output(probs)

    probs2 = relax.Var("probs", relax.TensorType([b, v], "float32"))
    out_types = [relax.TensorType([b, v], "float32"), relax.TensorType([b, v], "int32")]
    if gpu:
        if hardware:
            (cand_func, merge_func), rest_func = _top_first_rank_kernels(), _top_first_rest_by_token()
        else:
            cand_func, merge_func, rest_func = _top_first_gpu_kernels()
        cand_kernel = bb.add_func(cand_func, "top_first_chunk_rank" if hardware else "top_first_candidates")
        merge_kernel = bb.add_func(merge_func, "top_first_merge_rank" if hardware else "top_first_merge")
        rest_kernel = bb.add_func(rest_func, "top_first_rest_token" if hardware else "top_first_rest")
    else:
        sort_kernel = bb.add_func(_top_first_kernel(_Nest(gpu)), "top_first_sort")
    parts_n = (v + _RANK_CHUNK - 1) // _RANK_CHUNK if hardware else _SORT_PARTS
    with bb.function("argsort_probs", [probs2]):
        with bb.dataflow():
            if gpu:
                cand = bb.emit(relax.call_tir(cand_kernel, [probs2], [
                    relax.TensorType([b, parts_n, TOP_SORTED], "float32"),
                    relax.TensorType([b, parts_n, TOP_SORTED], "int32")]))
                cand_p_, cand_i_ = relax.TupleGetItem(cand, 0), relax.TupleGetItem(cand, 1)
                if hardware:  # the rank merge reads the candidates as one list per row
                    cand_p_ = bb.emit(relax.op.reshape(cand_p_, [b, parts_n * TOP_SORTED]))
                    cand_i_ = bb.emit(relax.op.reshape(cand_i_, [b, parts_n * TOP_SORTED]))
                top = bb.emit(relax.call_tir(merge_kernel, [cand_p_, cand_i_], [
                    relax.TensorType([b, TOP_SORTED], "float32"), relax.TensorType([b, TOP_SORTED], "int32")]))
                out = bb.emit(relax.call_tir(rest_kernel, [probs2, relax.TupleGetItem(top, 0),
                                                           relax.TupleGetItem(top, 1)], out_types))
            else:
                out = bb.emit(relax.call_tir(sort_kernel, [probs2], out_types))
            out = bb.emit_output(out)
        bb.emit_func_output(out)

    if gpu:  # greedy decoding's token without the softmax and the argsort (js/src/engine/async_decode.ts)
        am_parts, am_final = _argmax_gpu_kernels()
        am_parts_kernel = bb.add_func(am_parts, "argmax_parts")
        am_final_kernel = bb.add_func(am_final, "argmax_final")
        logits_am = relax.Var("logits", relax.TensorType([b, 1, v], "float32"))
        with bb.function("argmax_logits", [logits_am]):
            with bb.dataflow():
                np_ = (v + _AM_WG * _AM_PER - 1) // (_AM_WG * _AM_PER)
                parts = bb.emit(relax.call_tir(am_parts_kernel, [logits_am], [
                    relax.TensorType([b, np_], "float32"), relax.TensorType([b, np_], "int32")]))
                ids = bb.emit_output(relax.call_tir(am_final_kernel, [relax.TupleGetItem(parts, 0),
                                                                      relax.TupleGetItem(parts, 1)],
                                                    relax.TensorType([b], "int32")))
            bb.emit_func_output(ids)

    sp = relax.Var("sorted_probs", relax.TensorType([b, v], "float32"))
    si = relax.Var("sorted_indices", relax.TensorType([b, v], "int32"))
    u = relax.Var("uniform_samples", relax.TensorType([n], "float32"))
    rows = relax.Var("sample_indices", relax.TensorType([n], "int32"))
    top_p = relax.Var("top_p", relax.TensorType([b], "float32"))
    kernel = bb.add_func(_sample_top_p(_Nest(gpu)), "sample_top_p_kernel")
    with bb.function("sample_with_top_p", [sp, si, u, rows, top_p]):
        with bb.dataflow():
            out = bb.emit_output(relax.call_tir(kernel, [sp, si, u, rows, top_p],
                                                relax.TensorType([n], "int32")))
        bb.emit_func_output(out)


def _add_kv_cache_creation(bb: relax.BlockBuilder, cfg: Any, dtype: str, target: tvm.target.Target) -> None:
    names = ["max_batch_size", "max_total_seq_len", "prefill_chunk_size", "page_size", "support_sliding_window"]
    tvars = [tirx.Var(nm, "int64") for nm in names]
    params = [relax.Var(nm + "_", relax.ShapeType([tv])) for nm, tv in zip(names, tvars)]
    rope = registry.family_of(cfg).kv_cache_rope(cfg)
    ext = relax.prim_value(0) if rope["rope_ext_factors"] is None else relax.const(rope["rope_ext_factors"])
    with bb.function("create_tir_paged_kv_cache", params):
        kinds = cfg.attn_kinds()
        if "mha" not in kinds:
            # TVM 0.27's runtime allocates the buffers q/k/v are split into only when some layer is a plain "mha"
            # one (PagedAttentionKVCacheObj's constructor): a cache of windowed layers alone fails on its first
            # step. One more plain layer, which the model never uses, makes it allocate them.
            kinds = kinds + ["mha"]
        cache = TIRPagedKVCache(
            attn_kind=kinds if "mha_sliding" in kinds else "mha", max_batch_size=tvars[0], max_total_seq_len=tvars[1],
            prefill_chunk_size=tvars[2], page_size=tvars[3], support_sliding_window=tvars[4],
            layer_partition=relax.ShapeExpr([0, len(kinds)]),
            num_hidden_layers=len(kinds), num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=cfg.num_key_value_heads, qk_head_dim=cfg.head_dim, v_head_dim=cfg.head_dim,
            mla_original_qk_head_dim=0, mla_original_v_head_dim=0,
            rope_mode=RopeMode.NONE if rope.get("rope_mode") == "none" else RopeMode.NORMAL,
            rope_scale=rope["rope_scale"], rope_theta=cfg.rope_theta, rope_scaling=rope["rope_scaling"],
            rope_ext_factors=ext,
            rotary_dim=cfg.head_dim, enable_disaggregation=False, dtype=dtype, target=target,
            layer_sliding_window_size=UNBOUNDED_WINDOW)
        bb.emit_func_output(cache._expr)  # pylint: disable=protected-access


def _tir_config(cfg: Any, gpu: bool) -> dict[str, Any]:
    """TIR build options for a model. Llama 3's RoPE scaling, which the paged KV cache's prefill and tree
    attention kernels compute inline, makes TVM 0.27's common-subexpression elimination emit a variable before
    its definition ("cse_vN has been used before definition") in the GPU schedules of heads of 64: such models
    are built without that pass (the WGSL compiler and the GPU driver still merge common subexpressions)."""
    scaling = getattr(cfg, "rope_scaling", None) or {}
    return {"tirx.disable_cse_tir": True} if gpu and scaling.get("rope_type") == "llama3" else {}


def export_model(config: Any, quantization: Quantization | str = "q0f32",
                 target: Any = "webgpu", schedule: str = "auto") -> ExportedModel:
    """The Relax module holding the model and every function of web-llm's ABI.

    ``schedule="fallback"`` (software adapters) writes the quantized matrix-vector products in the
    factored form its kernels are scheduled for (same parameters, same results up to rounding).
    """
    cfg = registry.config_from_dict(config)
    family = registry.family_of(cfg)
    quant = as_quantization(quantization)
    tgt = _target(target)
    gpu = tgt.kind.name != "llvm"
    # hardware GPUs: decode's SwiGLU inside the down projection and each RMSNorm inside the product that reads
    # it (three dispatches a layer fewer, and the final norm); the software adapters' schedule keeps its factored
    # products
    hardware = gpu and schedule != "fallback"
    model = quantize_module(family.model(cfg), quant, factored=gpu and schedule == "fallback",
                            fuse_glu=hardware, fuse_norm=hardware)
    mod, named_params = model.export_tvm(spec=model.get_default_spec())
    params = expected_params(named_params)
    metadata = {
        "model_type": cfg.model_type,
        "quantization": quant.name,
        "context_window_size": cfg.context_window_size,
        "sliding_window_size": -1,
        "attention_sink_size": -1,
        "prefill_chunk_size": cfg.prefill_chunk_size,
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        "kv_state_kind": "kv_cache",
        "max_batch_size": 1,
        "params": params,
        "kv_cache": family.kv_cache_dims(cfg),
        "memory_usage": {},
    }
    bb = relax.BlockBuilder(mod)
    _add_kv_cache_creation(bb, cfg, quant.compute_dtype, tgt)
    _add_sampling(bb, gpu, hardware=schedule != "fallback")
    with bb.function("_metadata", []):
        bb.emit_func_output(tvm.ir.StringImm(json.dumps(metadata)))
    mod = bb.finalize()
    cap = getattr(cfg, "attn_logit_softcapping", None)  # Gemma 2's attention soft-capping (its config class)
    if cap:
        mod = softcap_attention(mod, cap)
    if cfg.sliding_layers:
        mod = use_windowed_attention(mod, cfg.num_key_value_heads, cfg.num_attention_heads, cfg.head_dim,
                                     quant.compute_dtype, cfg.sliding_window)
    nest = _Nest(gpu)
    mod["apply_logit_bias_inplace"] = _apply_logit_bias(nest)
    mod["apply_penalty_inplace"] = _apply_penalty(nest)
    mod["apply_bitmask_inplace"] = _apply_bitmask(nest)
    for name in ("apply_logit_bias_inplace", "apply_penalty_inplace", "apply_bitmask_inplace"):
        mod[name] = mod[name].with_attr("global_symbol", name)
    return ExportedModel(mod, params, metadata, _tir_config(cfg, gpu))


def _for_schedule(exported: ExportedModel, tgt: tvm.target.Target, schedule: str) -> tvm.IRModule:
    mod = exported.mod
    if tgt.kind.name != "llvm":  # the KV cache's decode attention: ours on every GPU schedule (schedules.py)
        from .schedules import use_fallback_attention

        kv = exported.metadata["kv_cache"]
        mod = use_fallback_attention(mod, kv["num_key_value_heads"], kv["num_attention_heads"], kv["head_dim"],
                                     as_quantization(exported.metadata["quantization"]).compute_dtype,
                                     gpu=schedule != "fallback")
    return mod


def compile_model(exported: ExportedModel, target: Any = "webgpu", schedule: str = "auto",
                  report: dict | None = None) -> relax.VMExecutable:
    """Compile an exported module (for ``llvm`` this is a native library the Python VM can run).

    On a GPU target ``report`` (a dict), if given, receives which schedule rule took each kernel
    (:class:`.schedules.ApplyRules`)."""
    from .schedules import schedule_pipeline

    tgt = _target(target)
    mod = _for_schedule(exported, tgt, schedule)
    with tgt, tvm.transform.PassContext(config=exported.tir_config):
        return tvm.compile(mod, target=tgt, relax_pipeline=schedule_pipeline(mod, tgt, schedule, report))


def schedule_report(exported: ExportedModel, target: Any = "webgpu", schedule: str = "auto") -> dict:
    """Which schedule rule takes each GPU kernel of ``exported`` (function name -> rule class name, None for
    none), without generating code; ``"__product_fallbacks__"`` lists matrix products left to TVM's generic
    rules. A broken rule raises :class:`.schedules.ScheduleRuleError`."""
    from .schedules import _rules, scheduling_passes

    tgt = _target(target)
    report: dict = {}
    with tgt:
        tvm.transform.Sequential(scheduling_passes(tgt, _rules(schedule), report))(_for_schedule(exported, tgt, schedule))
    return report


def content_key(config: Any, quantization: Quantization, target: str, schedule: str) -> str:
    """Cache key of a model library: everything that goes into the compiled code (:mod:`.keys`)."""
    from .keys import model_library_key

    return model_library_key(config, quantization, target, schedule, tvm=tvm.__version__)


def build_model_library(config: Any, quantization: Quantization | str = "q4f32_1",
                        target: str = "webgpu", *, schedule: str = "auto", progress: bool = True) -> "Library":
    """Compile and link the model library web-llm loads (``model.wasm``), cached by content hash.

    ``schedule`` picks the GPU kernels (see :mod:`.schedules`): ``"auto"``/``"gpu"`` for TVM's dlight
    schedules (real GPUs), ``"fallback"`` for one-thread-per-row kernels that suit software
    adapters (SwiftShader). A second call with the same inputs reads the cached ``.wasm``.

    Returns a :class:`webllm_widget.compile.build.Library` (``.wasm`` bytes, ``.sha256``,
    ``.save(path)``; ``.functions``; ``.wgsl`` of each kernel when freshly compiled).
    """
    from ..cache import build_lock, cache_dir, sha256_bytes
    from .build import Library

    cfg = registry.config_from_dict(config)
    quant = as_quantization(quantization)
    key = content_key(cfg, quant, target, schedule)
    folder = cache_dir() / "model-libs" / key
    wasm_path, info_path = folder / "model.wasm", folder / "info.json"
    def cached() -> "Library | None":
        if not (wasm_path.is_file() and info_path.is_file()):
            return None
        info = json.loads(info_path.read_text())
        data = wasm_path.read_bytes()
        return Library(wasm=data, sha256=sha256_bytes(data), functions=info["functions"], wgsl={},
                       target=target, name=info["name"])

    if (lib := cached()) is not None:
        return lib
    # one build per library at a time across processes; whoever waited reads the other's result
    with build_lock(f"model-lib-{key}"):
        if (lib := cached()) is not None:
            return lib
        return _build_model_library(cfg, quant, target, schedule, key, folder, progress)


def _build_model_library(cfg: Any, quant: Quantization, target: str, schedule: str, key: str, folder: Path,
                         progress: bool) -> "Library":
    from ..cache import atomic_write_bytes, sha256_bytes
    from .build import Library, link_executable, vm_functions, wgsl_sources

    wasm_path, info_path = folder / "model.wasm", folder / "info.json"
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=2, desc=f"compiling {cfg.model_type} {quant.name} for {target}", unit="step")
    exported = export_model(cfg, quant, target, schedule)
    report: dict = {}
    exe = compile_model(exported, target, schedule, report)
    if bar:
        bar.update(1)
        bar.set_description("linking the model library")
    folder.mkdir(parents=True, exist_ok=True)
    link_executable(exe, wasm_path, target=target, progress=False)
    if bar:
        bar.update(1)
        bar.close()
    name = f"{cfg.model_type}-{quant.name}-{target}-{key[:8]}"
    functions = vm_functions(exe)
    atomic_write_bytes(info_path, json.dumps({"name": name, "functions": functions, "metadata": exported.metadata,
                                              "schedule_rules": report}).encode())
    data = wasm_path.read_bytes()
    return Library(wasm=data, sha256=sha256_bytes(data), functions=functions, wgsl=wgsl_sources(exe),
                   target=target, name=name)
