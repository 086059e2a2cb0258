"""The CPU target's SIMD weight layout and hand-written kernels, checked natively (no browser, no link).

The kernels of ``compile/cpu.py`` are target-independent TIR: compiled for the host's llvm they
must give the same logits as the model's generic dequantizing kernels on the usual layout.
"""
from __future__ import annotations

import numpy as np
import pytest
import tvm

from llama_native import FORCED, PROMPT, ArrayCheckpoint, NativeModel
from reference import LlamaReference, check_integer_activation_logits
from tiny import TinyLlama
from webllm_widget.compile.cpu import (ISAS, activation_bits, cpu_param_records, pack_for_cpu, pack_scales_for_cpu,
                                      qmatmul_kernel, quantize_activations, specialize_for_cpu, unpack_from_cpu,
                                      unpack_scales_from_cpu)
from webllm_widget.compile.arch.llama.config import LlamaConfig
from webllm_widget.compile.arch.llama.loader import param_sources
from webllm_widget.compile.model_lib import export_model
from webllm_widget.compile.params import param_records
from webllm_widget.compile.quant.ggml import ggml_quantization
from webllm_widget.compile.quant.modes import as_quantization
from webllm_widget.compile.quant.packing import _pack_bytes, _pack_nibbles, dequantize
from webllm_widget.compile.checkpoint import open_checkpoint

#: The host's x86-64 with SSSE3 (pmaddubsw, the native stand-in for wasm's relaxed 8-bit dot product).
NATIVE = {"kind": "llvm", "mattr": ["+ssse3"]}


def test_cpu_4bit_layout_puts_element_i_in_the_low_and_16_plus_i_in_the_high_nibble_of_byte_i():
    rng = np.random.default_rng(0)
    q = rng.integers(0, 16, (3, 64), dtype=np.uint8)
    w = pack_for_cpu(_pack_nibbles(q), 4)
    b = w.astype("<u4").view(np.uint8).reshape(3, 64 // 2)
    for k in range(64):
        g, r = divmod(k, 32)
        byte = b[:, g * 16 + r % 16]
        np.testing.assert_array_equal(byte & 15 if r < 16 else byte >> 4, q[:, k])
    np.testing.assert_array_equal(unpack_from_cpu(w, 4), _pack_nibbles(q))


@pytest.mark.parametrize("bits", [4, 8])
def test_cpu_layout_stores_each_block_of_four_rows_word_by_word(bits):
    """Rows in blocks of 4 (N a multiple of 4): the block's 32-bit word 0 of its 4 rows, then their word 1, ...; the
    scales of a block's 4 rows side by side per group."""
    rng = np.random.default_rng(2)
    n, k = 8, 64
    q = rng.integers(0, 1 << bits, (n, k), dtype=np.uint8)
    packed = _pack_bytes(q) if bits == 8 else _pack_nibbles(q)
    w = pack_for_cpu(packed, bits)
    words = k * bits // 32
    # every row in the within-group byte order, not interleaved (blocks of 3 and 2 rows are stored row after row)
    rows = np.concatenate([pack_for_cpu(packed[i:i + 3], bits) for i in (0, 3, 6)])
    for r in range(n):
        for j in range(words):
            assert w.reshape(-1)[(r // 4 * words + j) * 4 + r % 4] == rows[r, j]
    np.testing.assert_array_equal(unpack_from_cpu(w, bits), packed)
    s = rng.standard_normal((n, k // 32)).astype(np.float32)
    ps = pack_scales_for_cpu(s)
    np.testing.assert_array_equal(ps.reshape(2, k // 32, 4)[1, 1], s[4:8, 1])
    np.testing.assert_array_equal(unpack_scales_from_cpu(ps), s)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("fmt", ["q4", "q4_1", "q8_0"])
@pytest.mark.parametrize("n", [42, 44])
def test_integer_dot_kernel_equals_the_product_of_8bit_activation_blocks_and_weights(fmt, isa, n):
    """One quantized product alone: x rounded to 8-bit blocks (``quantize_activations``) times the decoded weights,
    for a 5-token input through prefill tiles of 4 and 8 tokens (partial tiles) and token by token; 42 output rows
    leave a partial block of the kernels' four rows (stored row after row), 44 are 11 interleaved blocks."""
    rng = np.random.default_rng(3)
    k, t = 96, 5
    bits = 8 if fmt == "q8_0" else 4
    q = rng.integers(0, 1 << bits, (n, k), dtype=np.uint8)
    # scales of either sign: a GGUF's Q4_0 blocks stored as q4 carry their scale negated (quant/ggml.py)
    s = (rng.uniform(0.01, 0.1, (n, k // 32)) * rng.choice([-1, 1], (n, k // 32))).astype(np.float32)
    m = rng.uniform(-0.5, 0.5, (n, k // 32)).astype(np.float32)
    words = pack_for_cpu(_pack_bytes(q) if bits == 8 else _pack_nibbles(q), bits)
    off = {"q4": -7.0, "q8_0": -128.0}.get(fmt, 0.0)
    w = (q.astype(np.float32) + off) * np.repeat(s, 32, axis=1)
    if fmt == "q4_1":
        w += np.repeat(m, 32, axis=1)
    x = rng.standard_normal((1, t, k)).astype(np.float32)
    xq, xd = quantize_activations(x, activation_bits(fmt, isa))
    want = (xq.astype(np.float64) * np.repeat(xd, 32, axis=-1)) @ w.T.astype(np.float64)
    args = [words, pack_scales_for_cpu(s), pack_scales_for_cpu(m)][:3 if fmt == "q4_1" else 2]
    for tile in (1, 4, 8):
        tgt = tvm.target.Target(NATIVE)
        f = tvm.compile(qmatmul_kernel(fmt, k, n, tile=tile, isa=isa, arch="x86_64").with_attr("global_symbol", "f"),
                        target=tgt)
        y = tvm.runtime.tensor(np.zeros((1, t, n), np.float32))
        f(tvm.runtime.tensor(x), *[tvm.runtime.tensor(a) for a in args], y)
        np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [8, 6])
def test_relaxed_byte_dots_summed_as_int16_are_exact_at_their_bound(n):
    """The relaxed kernels' ``i16x8`` variant adds a group's byte dots as 16-bit sums before widening them
    (``I16_SUMS``): at the bound
    (4-bit weights all 15 against value and residue bytes of +-127, every product of a lane of one sign) the sums
    reach 30480 of int16's 32767 and the products must still equal numpy's exactly (an int16 sum that wrapped would
    be off by 65536 times a scale). Interleaved rows (8) and rows one after another (6)."""
    from webllm_widget.compile.cpu import I16_SUMS, LO_SCALE

    k = 64
    q = np.full((n, k), 15, np.uint8)
    q[n // 2:] = np.random.default_rng(4).integers(0, 16, (n - n // 2, k))
    s = np.ones((n, k // 32), np.float32)
    group = np.full(32, 126.5, np.float32)
    group[2] = 127.0  # the group's amax: its scale is 1, 126.5 rounds to 126 (ties to even), residue +0.5 * 254
    x = np.stack([np.full(k, 127.0, np.float32),  # value bytes all 127, residues 0
                  np.tile(group, 2), -np.tile(group, 2),  # residue bytes +127 (-127) beside values 126 (-126)
                  np.tile(np.where(group == 127.0, 127.0, 125.5), 2).astype(np.float32)])[None]  # 126 and -127
    xq, xd = quantize_activations(x, "int8x2")
    hi = np.rint(x)  # scale 1 (amax 127): the value bytes, and the residue bytes below
    assert (xq == hi * LO_SCALE + np.rint((x - hi) * LO_SCALE)).all()
    assert np.abs(hi).max() == 127 and np.abs(np.rint((x - hi) * LO_SCALE)).max() == 127
    # the largest 16-bit sum: a lane's 16 products (2 of each of the group's 8 byte dots) of 127 * 15, one sign
    assert I16_SUMS * 2 * 127 * 15 == 30480 <= 32767
    w = (q.astype(np.float64) - 7.0) * np.repeat(s, 32, axis=1)
    want = (xq.astype(np.float64) * np.repeat(xd, 32, axis=-1)) @ w.T
    words = pack_for_cpu(_pack_nibbles(q), 4)
    for tile in (1, 4):
        f = tvm.compile(qmatmul_kernel("q4", k, n, tile=tile, isa="relaxed-simd", arch="x86_64", dot="i16x8")
                        .with_attr("global_symbol", "f"), target=tvm.target.Target(NATIVE))
        y = tvm.runtime.tensor(np.zeros((1, 4, n), np.float32))
        f(tvm.runtime.tensor(x), tvm.runtime.tensor(words), tvm.runtime.tensor(pack_scales_for_cpu(s)), y)
        np.testing.assert_allclose(y.numpy(), want, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("dot,act", [("i16x8", None), ("i32x4", "int8"), ("i16x8", "int8")])
@pytest.mark.parametrize("n", [42, 44])
def test_relaxed_kernel_variants_equal_the_product_of_their_activation_blocks(dot, act, n):
    """The relaxed build's other ways to add its byte dots (16-bit sums widened once a group) and single-byte
    activations (``int8``, llama.cpp's rounding), which ``bench/cpu_variants.py`` measures: each equals numpy's
    product of the blocks ``quantize_activations`` gives for its form, rows interleaved (44) or not (42), decode and
    a prefill tile."""
    rng = np.random.default_rng(7)
    k, t = 96, 5
    q = rng.integers(0, 16, (n, k), dtype=np.uint8)
    s = (rng.uniform(0.01, 0.1, (n, k // 32)) * rng.choice([-1, 1], (n, k // 32))).astype(np.float32)
    w = (q.astype(np.float64) - 7.0) * np.repeat(s, 32, axis=1)
    x = rng.standard_normal((1, t, k)).astype(np.float32)
    xq, xd = quantize_activations(x, act or "int8x2")
    if act == "int8":
        assert np.abs(xq).max() == 127 and np.abs(xq - np.rint(xq)).max() == 0
    want = (xq.astype(np.float64) * np.repeat(xd, 32, axis=-1)) @ w.T
    words, scales = pack_for_cpu(_pack_nibbles(q), 4), pack_scales_for_cpu(s)
    for tile in (1, 8):
        f = tvm.compile(qmatmul_kernel("q4", k, n, tile=tile, isa="relaxed-simd", arch="x86_64", act=act, dot=dot)
                        .with_attr("global_symbol", "f"), target=tvm.target.Target(NATIVE))
        y = tvm.runtime.tensor(np.zeros((1, t, n), np.float32))
        f(tvm.runtime.tensor(x), tvm.runtime.tensor(words), tvm.runtime.tensor(scales), y)
        np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-5)


def test_cpu_8bit_layout_keeps_element_k_in_byte_k():
    rng = np.random.default_rng(1)
    q = rng.integers(0, 256, (2, 64), dtype=np.uint8)
    w = pack_for_cpu(_pack_bytes(q), 8)
    np.testing.assert_array_equal(w.astype("<u4").view(np.uint8).reshape(2, 64), q)
    np.testing.assert_array_equal(unpack_from_cpu(w, 8), _pack_bytes(q))


def _logits(mod, ex, records, cfg):
    tgt = tvm.target.Target(NATIVE)
    with tgt:
        lib = tvm.compile(mod, target=tgt)
    return NativeModel(lib, records, ex.metadata, cfg.hidden_size).teacher_forced(PROMPT, FORCED)


def _hf_weights(records: dict, cfg: LlamaConfig, quant) -> dict:
    """Float32 HF-named weights holding exactly what the packed records encode (the reference's input)."""
    out = {}
    hd, hq, hkv = cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
    for path, names, is_matrix in param_sources(cfg):
        if not is_matrix:
            parts = np.split(records[path], np.cumsum([hq * hd, hkv * hd])) if len(names) == 3 else [records[path]]
            out.update(zip(names, parts))
            continue
        arrays = {k.rsplit(".", 1)[1]: v for k, v in records.items() if k.rsplit(".", 1)[0] == path}
        w = dequantize(quant.format_of(path, cfg.hidden_size if "down_proj" not in path else cfg.intermediate_size), arrays)
        if len(names) == 3:
            parts = np.split(w, np.cumsum([hq * hd, hkv * hd]))
        elif len(names) == 2:
            parts = np.split(w, 2)
        else:
            parts = [w]
        out.update(zip(names, parts))
    return out


@pytest.mark.parametrize("source,isa", [("q4f32_1", "simd128"), ("gguf", "simd128"), ("gguf", "relaxed-simd")])
def test_simd_kernels_match_the_numpy_reference_on_the_weights_they_encode(source, isa, tmp_path):
    """q4f32_1 exercises the symmetric 4-bit kernels; the GGUF (the CPU's ``ggml`` mode) Q4_1 attention matrices,
    Q4_0 MLP matrices (stored as the symmetric ``q4``, scales negated) and the Q8_0 embedding/LM head.

    The kernels round each matrix product's input to 8-bit blocks of 32 (llama.cpp's rule): the logits are checked
    against the reference doing the same (``activations="q8"``) and the float one (tolerances in
    ``reference.check_integer_activation_logits``).
    For the relaxed-SIMD build the x86 stand-in for ``relaxed_dot_i8x16_i7x16_add_s`` (pmaddubsw + pmaddwd) runs
    the same arithmetic; the wasm instruction itself runs in the browser tests.
    """
    tiny = TinyLlama.make(seed=1)
    if source == "gguf":
        mlp = {n: "Q4_0" for n in tiny.weights if ".mlp." in n}
        ckpt = open_checkpoint(tiny.write_gguf(tmp_path / "t.gguf", matrix_type="Q4_1", block_types=mlp))
        cfg = LlamaConfig.from_dict(ckpt.config, prefill_chunk_size=8)
        quant = ggml_quantization(ckpt, cfg, device="cpu")
        formats = dict(quant.formats)
        assert (formats["model.layers.0.mlp.down_proj"], formats["model.layers.0.mlp.gate_up_proj"],
                formats["model.layers.0.self_attn.qkv_proj"]) == ("q4", "q4", "q4_1"), formats
    else:
        ckpt = ArrayCheckpoint(tiny.weights)
        cfg = LlamaConfig.from_dict(tiny.config, prefill_chunk_size=8)
        quant = as_quantization(source)
    ex = export_model(cfg, quant, tvm.target.Target({"kind": "llvm"}))
    records = list(param_records(ckpt, cfg, quant))
    cpu_mod = specialize_for_cpu(ex.mod, tvm.target.Target(NATIVE), isa, kv_cache=ex.metadata["kv_cache"])
    replaced = [gv.name_hint for gv in ex.mod.get_global_vars()
                if gv.name_hint.startswith("dequant_") and not cpu_mod[gv].same_as(ex.mod[gv])]
    assert any(n.startswith("dequant_take") for n in replaced) and any(n.startswith("dequant_lm_head") for n in replaced)
    got = _logits(cpu_mod, ex, list(cpu_param_records(records)), cfg)
    weights = _hf_weights(dict(records), cfg, quant)
    # which products take byte blocks: 4-bit weights in the relaxed build (the GGUF's Q8_0 LM head takes 16 bits)
    bits = 16 if isa == "simd128" else {"*": "int8x2", "lm_head": 16 if source.startswith("gguf") else "int8x2"}
    want = LlamaReference(weights, tiny.config, activations=bits).forward(PROMPT + FORCED)[len(PROMPT) - 1:]
    exact = LlamaReference(weights, tiny.config).forward(PROMPT + FORCED)[len(PROMPT) - 1:]
    check_integer_activation_logits(got, want, exact)


def test_single_byte_activations_match_the_numpy_reference_rounding_the_same_way(tmp_path):
    """The relaxed build's single-byte variant (``act="int8"``, only built by ``bench/cpu_variants.py``): the tiny GGUF
    model's logits equal the numpy reference rounding every 4-bit product's input to 8-bit blocks the same way
    (``activations=8``; the Q8_0 LM head keeps 16 bits), and differ from the float and value + residue ones by far
    more than that (what single bytes cost: SmolLM2's greedy answer changes, ``compile/cpu.py`` ACTIVATIONS)."""
    tiny = TinyLlama.make(seed=1)
    mlp = {n: "Q4_0" for n in tiny.weights if ".mlp." in n}
    ckpt = open_checkpoint(tiny.write_gguf(tmp_path / "t.gguf", matrix_type="Q4_1", block_types=mlp))
    cfg = LlamaConfig.from_dict(ckpt.config, prefill_chunk_size=8)
    quant = ggml_quantization(ckpt, cfg, device="cpu")
    ex = export_model(cfg, quant, tvm.target.Target({"kind": "llvm"}))
    records = list(param_records(ckpt, cfg, quant))
    mod = specialize_for_cpu(ex.mod, tvm.target.Target(NATIVE), "relaxed-simd", kv_cache=ex.metadata["kv_cache"],
                             variant={"act": "int8"})
    got = _logits(mod, ex, list(cpu_param_records(records)), cfg)
    weights = _hf_weights(dict(records), cfg, quant)
    ref = {form: LlamaReference(weights, tiny.config, activations=form and {"*": form, "lm_head": 16})
           .forward(PROMPT + FORCED)[len(PROMPT) - 1:] for form in (8, "int8x2", None)}
    np.testing.assert_allclose(got, ref[8], atol=7.5e-3, rtol=0)
    assert np.abs(got - ref["int8x2"]).max() > 0.05 and np.abs(got - ref[None]).max() > 0.05
    with pytest.raises(ValueError, match="relaxed-SIMD build"):
        specialize_for_cpu(ex.mod, tvm.target.Target(NATIVE), "simd128", variant={"act": "int8"})


def _run_attention(func, args, scalars):
    m = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                    target=tvm.target.Target({"kind": "llvm"}))
    ts = [tvm.runtime.tensor(a) for a in args]
    m["main"](*ts, *scalars)
    return [t.numpy() for t in ts[-2:]]


def test_cpu_attention_kernels_equal_tvms_on_pages_and_ragged_chunks():
    """The page CPU's attention (compile/cpu_attention.py) against TVM's own CPU kernels, which the KV cache would
    call otherwise: decode over two sequences' pages (a partial last page, pages out of order) and ragged prefill of
    two sequences, causal and not; outputs and log-sum-exp."""
    from tvm.relax.frontend.nn.llm.kv_cache import _attention_decode_cpu, _attention_prefill_ragged_cpu

    from webllm_widget.compile.cpu_attention import decode_kernel, prefill_ragged_kernel

    rng = np.random.default_rng(5)
    h_kv, h_q, d, ps = 2, 6, 16, 4
    pages = rng.standard_normal((10, 2, h_kv, ps, d)).astype(np.float32)
    z2 = np.zeros(2, np.int32)
    dec = [rng.standard_normal((2, h_q, d)).astype(np.float32), pages, np.array([0, 3, 5], np.int32),
           np.array([7, 2, 5, 0, 9], np.int32), np.array([2, 4], np.int32), z2, z2,
           np.zeros((2, h_q, d), np.float32), np.zeros((2, h_q), np.float32)]
    scalars = (0, 1.0, 10000.0, 0.125)
    want = _run_attention(_attention_decode_cpu(h_kv, h_q, d, "float32", False, {}, ps), dec, scalars)
    got = _run_attention(decode_kernel(h_kv, h_q, d, ps), dec, scalars)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    rag = [rng.standard_normal((8, h_q, d)).astype(np.float32), np.array([0, 3, 8], np.int32),
           rng.standard_normal((10, h_kv, d)).astype(np.float32), rng.standard_normal((10, h_kv, d)).astype(np.float32),
           np.array([0, 3, 10], np.int32), np.zeros(8, np.int32), z2,
           np.zeros((8, h_q, d), np.float32), np.zeros((8, h_q), np.float32)]
    for causal in (1, 0):
        want = _run_attention(_attention_prefill_ragged_cpu(h_kv, h_q, d, d, "float32", {}), rag, (causal, *scalars))
        got = _run_attention(prefill_ragged_kernel(h_kv, h_q, d), rag, (causal, *scalars))
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_cpu_attention_replacements_keep_the_soft_cap():
    """A soft-capped kernel (Gemma 2, compile/attention.py) is replaced by one applying the same cap: equal to TVM's
    kernel rewritten by softcap_attention, and different from the uncapped one."""
    from tvm.relax.frontend.nn.llm.kv_cache import _attention_prefill_ragged_cpu

    from webllm_widget.compile.attention import softcap_attention
    from webllm_widget.compile.cpu_attention import REPLACED, replace_attention

    rng = np.random.default_rng(6)
    h_kv, h_q, d = 1, 2, 8
    capped = softcap_attention(tvm.IRModule({REPLACED[1]: _attention_prefill_ragged_cpu(h_kv, h_q, d, d, "float32", {})
                                             .with_attr("global_symbol", REPLACED[1])}), 0.5)
    ours = replace_attention(capped.clone() if hasattr(capped, "clone") else tvm.IRModule(dict(capped.functions)),
                             {"num_key_value_heads": h_kv, "num_attention_heads": h_q, "head_dim": d})
    rag = [3 * rng.standard_normal((4, h_q, d)).astype(np.float32), np.array([0, 4], np.int32),
           3 * rng.standard_normal((4, h_kv, d)).astype(np.float32), rng.standard_normal((4, h_kv, d)).astype(np.float32),
           np.array([0, 4], np.int32), np.zeros(4, np.int32), np.zeros(1, np.int32),
           np.zeros((4, h_q, d), np.float32), np.zeros((4, h_q), np.float32)]
    scalars = (1, 0, 1.0, 10000.0, 1.0)
    want = _run_attention(capped[REPLACED[1]], rag, scalars)
    got = _run_attention(ours[REPLACED[1]], rag, scalars)
    assert not ours[REPLACED[1]].same_as(capped[REPLACED[1]])
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    plain = _run_attention(_attention_prefill_ragged_cpu(h_kv, h_q, d, d, "float32", {}), rag, scalars)
    assert np.abs(plain[0] - got[0]).max() > 1e-2
