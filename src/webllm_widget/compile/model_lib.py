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
from typing import Any

import tvm
from tvm import relax, te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn.llm.kv_cache import RopeMode, TIRPagedKVCache
from tvm.script import tirx as T

from .llama import LlamaConfig, LlamaForCausalLM, kv_cache_dims
from .quantize import Quantization, as_quantization, expected_params, quantize_module

#: Bump when the generated code changes in a way the content hash cannot see.
ABI_VERSION = "1"


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


# ---------------------------------------------------------------------------------------------
# Logit processing and sampling kernels (hand-written TIR; one thread per token or per sample).

def _threads(gpu: bool, n, body):
    """Wrap ``body(i)`` over ``n`` items: a flat 1-D grid on GPUs, a serial loop on the CPU."""
    return body


def _apply_logit_bias(gpu: bool) -> tirx.PrimFunc:
    tx = 64

    @T.prim_func(s_tir=True)
    def apply_logit_bias_inplace(var_logits: T.handle, var_pos2seq: T.handle, var_ids: T.handle, var_bias: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, v, t = T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (b, v), "float32")
        pos2seq = T.match_buffer(var_pos2seq, (t,), "int32")
        ids = T.match_buffer(var_ids, (t,), "int32")
        bias = T.match_buffer(var_bias, (t,), "float32")
        for bx in T.thread_binding((t + tx - 1) // tx, "blockIdx.x"):
            for th in T.thread_binding(tx, "threadIdx.x"):
                with T.sblock("bias"):
                    i = T.axis.spatial(t, bx * tx + th)
                    T.where(bx * tx + th < t)
                    logits[pos2seq[i], ids[i]] = logits[pos2seq[i], ids[i]] + bias[i]

    @T.prim_func(s_tir=True)
    def apply_logit_bias_inplace_cpu(var_logits: T.handle, var_pos2seq: T.handle, var_ids: T.handle, var_bias: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, v, t = T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (b, v), "float32")
        pos2seq = T.match_buffer(var_pos2seq, (t,), "int32")
        ids = T.match_buffer(var_ids, (t,), "int32")
        bias = T.match_buffer(var_bias, (t,), "float32")
        for j in T.serial(t):
            with T.sblock("bias"):
                i = T.axis.spatial(t, j)
                logits[pos2seq[i], ids[i]] = logits[pos2seq[i], ids[i]] + bias[i]

    return apply_logit_bias_inplace if gpu else apply_logit_bias_inplace_cpu


def _apply_penalty(gpu: bool) -> tirx.PrimFunc:
    tx = 64
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
        for bx in T.thread_binding((t + tx - 1) // tx, "blockIdx.x"):
            for th in T.thread_binding(tx, "threadIdx.x"):
                with T.sblock("penalty"):
                    i = T.axis.spatial(t, bx * tx + th)
                    T.where(bx * tx + th < t)
                    T.reads(logits[0:b, 0:v], seq_ids[0:s], pos2seq[i], ids[i], cnt[i], pen[0:s, 0:3])
                    T.writes(logits[0:b, 0:v])
                    x = logits[seq_ids[pos2seq[i]], ids[i]] - pen[pos2seq[i], 0] - T.Cast("float32", cnt[i]) * pen[pos2seq[i], 1]
                    logits[seq_ids[pos2seq[i]], ids[i]] = T.if_then_else(x < T.float32(0), x * pen[pos2seq[i], 2],
                                                                         x / pen[pos2seq[i], 2])

    @T.prim_func(s_tir=True)
    def apply_penalty_inplace_cpu(var_logits: T.handle, var_seq_ids: T.handle, var_pos2seq: T.handle, var_ids: T.handle,
                                  var_cnt: T.handle, var_pen: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, v, t, s = T.int32(), T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (b, v), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (s,), "int32")
        pos2seq = T.match_buffer(var_pos2seq, (t,), "int32")
        ids = T.match_buffer(var_ids, (t,), "int32")
        cnt = T.match_buffer(var_cnt, (t,), "int32")
        pen = T.match_buffer(var_pen, (s, 3), "float32")
        for j in T.serial(t):
            with T.sblock("penalty"):
                i = T.axis.spatial(t, j)
                T.reads(logits[0:b, 0:v], seq_ids[0:s], pos2seq[i], ids[i], cnt[i], pen[0:s, 0:3])
                T.writes(logits[0:b, 0:v])
                x = logits[seq_ids[pos2seq[i]], ids[i]] - pen[pos2seq[i], 0] - T.Cast("float32", cnt[i]) * pen[pos2seq[i], 1]
                logits[seq_ids[pos2seq[i]], ids[i]] = T.if_then_else(x < T.float32(0), x * pen[pos2seq[i], 2],
                                                                     x / pen[pos2seq[i], 2])

    return apply_penalty_inplace if gpu else apply_penalty_inplace_cpu


def _apply_bitmask(gpu: bool) -> tirx.PrimFunc:
    tx = 64

    @T.prim_func(s_tir=True)
    def apply_bitmask_inplace(var_logits: T.handle, var_seq_ids: T.handle, var_mask: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, v, s = T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (b, v), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (s,), "int32")
        mask = T.match_buffer(var_mask, (b, (v + 31) // 32), "int32")
        for bx in T.thread_binding((s * v + tx - 1) // tx, "blockIdx.x"):
            for th in T.thread_binding(tx, "threadIdx.x"):
                with T.sblock("mask"):
                    si = T.axis.spatial(s, (bx * tx + th) // v)
                    vi = T.axis.spatial(v, (bx * tx + th) % v)
                    T.where(bx * tx + th < s * v)
                    logits[seq_ids[si], vi] = T.if_then_else(
                        T.bitwise_and(T.shift_right(mask[seq_ids[si], vi // 32], vi % 32), 1) == 1,
                        logits[seq_ids[si], vi], T.min_value("float32"))

    @T.prim_func(s_tir=True)
    def apply_bitmask_inplace_cpu(var_logits: T.handle, var_seq_ids: T.handle, var_mask: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, v, s = T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (b, v), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (s,), "int32")
        mask = T.match_buffer(var_mask, (b, (v + 31) // 32), "int32")
        for j, k in T.grid(s, v):
            with T.sblock("mask"):
                si, vi = T.axis.remap("SS", [j, k])
                logits[seq_ids[si], vi] = T.if_then_else(
                    T.bitwise_and(T.shift_right(mask[seq_ids[si], vi // 32], vi % 32), 1) == 1,
                    logits[seq_ids[si], vi], T.min_value("float32"))

    return apply_bitmask_inplace if gpu else apply_bitmask_inplace_cpu


def _sample_top_p(gpu: bool) -> tirx.PrimFunc:
    """Nucleus sampling from already sorted probabilities, one thread per sample.

    Keeps the smallest prefix whose mass reaches ``top_p`` (at least one token), then picks the
    first token whose running sum exceeds ``u * mass``. Both walks stop early, so greedy decoding
    (one token with probability ~1) touches a single element instead of the whole vocabulary.
    """

    @T.prim_func(s_tir=True)
    def sample_top_p_kernel(var_probs: T.handle, var_ids: T.handle, var_u: T.handle, var_rows: T.handle,
                            var_top_p: T.handle, var_out: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, v, n = T.int64(), T.int64(), T.int64()
        probs = T.match_buffer(var_probs, (b, v), "float32")
        ids = T.match_buffer(var_ids, (b, v), "int32")
        u = T.match_buffer(var_u, (n,), "float32")
        rows = T.match_buffer(var_rows, (n,), "int32")
        top_p = T.match_buffer(var_top_p, (b,), "float32")
        out = T.match_buffer(var_out, (n,), "int32")
        for bx in T.thread_binding(n, "blockIdx.x"):
            for th in T.thread_binding(1, "threadIdx.x"):
                with T.sblock("sample"):
                    i = T.axis.spatial(n, bx + th)
                    T.reads(probs[0:b, 0:v], ids[0:b, 0:v], u[i], rows[i], top_p[0:b])
                    T.writes(out[i])
                    cum = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    j = T.sblock_alloc_buffer((1,), "int64", scope="local")
                    chosen = T.sblock_alloc_buffer((1,), "int64", scope="local")
                    row = T.Cast("int64", rows[i])
                    cum[0] = T.float32(0)
                    j[0] = T.int64(0)
                    while j[0] < v and (j[0] == T.int64(0) or cum[0] < top_p[row]):
                        cum[0] = cum[0] + probs[row, j[0]]
                        j[0] = j[0] + T.int64(1)
                    target = u[i] * cum[0]
                    chosen[0] = j[0] - T.int64(1)
                    cum[0] = T.float32(0)
                    j[0] = T.int64(0)
                    while j[0] < chosen[0]:
                        cum[0] = cum[0] + probs[row, j[0]]
                        if cum[0] > target:
                            chosen[0] = j[0]
                        j[0] = j[0] + T.int64(1)
                    out[i] = ids[row, chosen[0]]

    @T.prim_func(s_tir=True)
    def sample_top_p_kernel_cpu(var_probs: T.handle, var_ids: T.handle, var_u: T.handle, var_rows: T.handle,
                                var_top_p: T.handle, var_out: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, v, n = T.int64(), T.int64(), T.int64()
        probs = T.match_buffer(var_probs, (b, v), "float32")
        ids = T.match_buffer(var_ids, (b, v), "int32")
        u = T.match_buffer(var_u, (n,), "float32")
        rows = T.match_buffer(var_rows, (n,), "int32")
        top_p = T.match_buffer(var_top_p, (b,), "float32")
        out = T.match_buffer(var_out, (n,), "int32")
        for k in T.serial(n):
            with T.sblock("sample"):
                i = T.axis.spatial(n, k)
                T.reads(probs[0:b, 0:v], ids[0:b, 0:v], u[i], rows[i], top_p[0:b])
                T.writes(out[i])
                cum = T.sblock_alloc_buffer((1,), "float32")
                j = T.sblock_alloc_buffer((1,), "int64")
                chosen = T.sblock_alloc_buffer((1,), "int64")
                row = T.Cast("int64", rows[i])
                cum[0] = T.float32(0)
                j[0] = T.int64(0)
                while j[0] < v and (j[0] == T.int64(0) or cum[0] < top_p[row]):
                    cum[0] = cum[0] + probs[row, j[0]]
                    j[0] = j[0] + T.int64(1)
                target = u[i] * cum[0]
                chosen[0] = j[0] - T.int64(1)
                cum[0] = T.float32(0)
                j[0] = T.int64(0)
                while j[0] < chosen[0]:
                    cum[0] = cum[0] + probs[row, j[0]]
                    if cum[0] > target:
                        chosen[0] = j[0]
                    j[0] = j[0] + T.int64(1)
                out[i] = ids[row, chosen[0]]

    return sample_top_p_kernel if gpu else sample_top_p_kernel_cpu


def _add_sampling(bb: relax.BlockBuilder, gpu: bool) -> None:
    """softmax_with_temperature, argsort_probs and sample_with_top_p as Relax functions."""
    b, v = tirx.Var("batch_size", "int64"), tirx.Var("vocab_size", "int64")
    n = tirx.Var("num_samples", "int64")

    logits = relax.Var("logits", relax.TensorType([b, 1, v], "float32"))
    temperature = relax.Var("temperature", relax.TensorType([b], "float32"))
    with bb.function("softmax_with_temperature", [logits, temperature]):
        with bb.dataflow():
            t = bb.emit(relax.op.reshape(temperature, [b, 1, 1]))
            probs = bb.emit_output(relax.op.nn.softmax(relax.op.divide(logits, t), axis=-1))
        bb.emit_func_output(probs)

    probs2 = relax.Var("probs", relax.TensorType([b, v], "float32"))
    with bb.function("argsort_probs", [probs2]):
        with bb.dataflow():
            order = bb.emit(relax.op.argsort(probs2, axis=-1, descending=True, dtype="int32"))
            sorted_probs = bb.emit_te(
                lambda p, o: te.compute((b, v), lambda i, j: p[i, o[i, j]], name="gather_sorted"),
                probs2, order, primfunc_name_hint="gather_sorted_probs")
            out = bb.emit_output(relax.Tuple([sorted_probs, order]))
        bb.emit_func_output(out)

    sp = relax.Var("sorted_probs", relax.TensorType([b, v], "float32"))
    si = relax.Var("sorted_indices", relax.TensorType([b, v], "int32"))
    u = relax.Var("uniform_samples", relax.TensorType([n], "float32"))
    rows = relax.Var("sample_indices", relax.TensorType([n], "int32"))
    top_p = relax.Var("top_p", relax.TensorType([b], "float32"))
    kernel = bb.add_func(_sample_top_p(gpu), "sample_top_p_kernel")
    with bb.function("sample_with_top_p", [sp, si, u, rows, top_p]):
        with bb.dataflow():
            out = bb.emit_output(relax.call_tir(kernel, [sp, si, u, rows, top_p],
                                                relax.TensorType([n], "int32")))
        bb.emit_func_output(out)


def _add_kv_cache_creation(bb: relax.BlockBuilder, cfg: LlamaConfig, dtype: str, target: tvm.target.Target) -> None:
    names = ["max_batch_size", "max_total_seq_len", "prefill_chunk_size", "page_size", "support_sliding_window"]
    tvars = [tirx.Var(nm, "int64") for nm in names]
    params = [relax.Var(nm + "_", relax.ShapeType([tv])) for nm, tv in zip(names, tvars)]
    with bb.function("create_tir_paged_kv_cache", params):
        cache = TIRPagedKVCache(
            attn_kind="mha", max_batch_size=tvars[0], max_total_seq_len=tvars[1], prefill_chunk_size=tvars[2],
            page_size=tvars[3], support_sliding_window=tvars[4],
            layer_partition=relax.ShapeExpr([0, cfg.num_hidden_layers]),
            num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=cfg.num_key_value_heads, qk_head_dim=cfg.head_dim, v_head_dim=cfg.head_dim,
            mla_original_qk_head_dim=0, mla_original_v_head_dim=0, rope_mode=RopeMode.NORMAL, rope_scale=1,
            rope_theta=cfg.rope_theta, rope_scaling={}, rope_ext_factors=relax.prim_value(0),
            rotary_dim=cfg.head_dim, enable_disaggregation=False, dtype=dtype, target=target)
        bb.emit_func_output(cache._expr)  # pylint: disable=protected-access


def export_model(config: LlamaConfig | dict, quantization: Quantization | str = "q0f32",
                 target: Any = "webgpu") -> ExportedModel:
    """The Relax module holding the model and every function of web-llm's ABI."""
    cfg = config if isinstance(config, LlamaConfig) else LlamaConfig.from_dict(config)
    quant = as_quantization(quantization)
    tgt = _target(target)
    gpu = tgt.kind.name != "llvm"
    model = quantize_module(LlamaForCausalLM(cfg), quant)
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
        "kv_cache": kv_cache_dims(cfg),
        "memory_usage": {},
    }
    bb = relax.BlockBuilder(mod)
    _add_kv_cache_creation(bb, cfg, quant.compute_dtype, tgt)
    _add_sampling(bb, gpu)
    with bb.function("_metadata", []):
        bb.emit_func_output(tvm.ir.StringImm(json.dumps(metadata)))
    mod = bb.finalize()
    mod["apply_logit_bias_inplace"] = _apply_logit_bias(gpu)
    mod["apply_penalty_inplace"] = _apply_penalty(gpu)
    mod["apply_bitmask_inplace"] = _apply_bitmask(gpu)
    for name in ("apply_logit_bias_inplace", "apply_penalty_inplace", "apply_bitmask_inplace"):
        mod[name] = mod[name].with_attr("global_symbol", name)
    return ExportedModel(mod, params, metadata)


def compile_model(exported: ExportedModel, target: Any = "webgpu", schedule: str = "auto") -> relax.VMExecutable:
    """Compile an exported module (for ``llvm`` this is a native library the Python VM can run)."""
    from .schedules import schedule_pipeline

    tgt = _target(target)
    with tgt:
        mod = schedule_pipeline(exported.mod, tgt, schedule)
        return tvm.compile(mod, target=tgt)


def content_key(config: LlamaConfig, quantization: Quantization, target: str, schedule: str) -> str:
    blob = json.dumps({"config": config.to_dict(), "quant": quantization.key(), "target": str(target),
                       "schedule": schedule, "abi": ABI_VERSION, "tvm": tvm.__version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]
