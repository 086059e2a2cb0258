"""The CPU target's SIMD weight layout and hand-written kernels, checked natively (no browser, no link).

The kernels of ``compile/cpu.py`` are target-independent TIR: compiled for the host's llvm they
must give the same logits as the model's generic dequantizing kernels on the usual layout.
"""
from __future__ import annotations

import numpy as np
import pytest
import tvm

from llama_native import FORCED, PROMPT, ArrayCheckpoint, NativeModel
from reference import LlamaReference
from tiny import TinyLlama
from webllm_widget.compile.cpu import cpu_param_records, pack_for_cpu, specialize_for_cpu, unpack_from_cpu
from webllm_widget.compile.arch.llama.config import LlamaConfig
from webllm_widget.compile.arch.llama.loader import param_sources
from webllm_widget.compile.model_lib import export_model
from webllm_widget.compile.params import param_records
from webllm_widget.compile.quant.ggml import ggml_quantization
from webllm_widget.compile.quant.modes import as_quantization
from webllm_widget.compile.quant.packing import _pack_bytes, _pack_nibbles, dequantize
from webllm_widget.compile.checkpoint import open_checkpoint


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


def test_cpu_8bit_layout_keeps_element_k_in_byte_k():
    rng = np.random.default_rng(1)
    q = rng.integers(0, 256, (2, 64), dtype=np.uint8)
    w = pack_for_cpu(_pack_bytes(q), 8)
    np.testing.assert_array_equal(w.astype("<u4").view(np.uint8).reshape(2, 64), q)
    np.testing.assert_array_equal(unpack_from_cpu(w, 8), _pack_bytes(q))


def _logits(mod, ex, records, cfg):
    tgt = tvm.target.Target({"kind": "llvm"})
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


@pytest.mark.parametrize("source", ["q4f32_1", "gguf-Q4_1"])
def test_simd_kernels_match_the_numpy_reference_on_the_weights_they_encode(source, tmp_path):
    """q4f32_1 exercises the symmetric 4-bit kernels; the GGUF mode Q4_1 matrices and the Q8_0 embedding/LM head."""
    tiny = TinyLlama.make(seed=1)
    if source.startswith("gguf"):
        ckpt = open_checkpoint(tiny.write_gguf(tmp_path / "t.gguf", matrix_type=source.split("-")[1]))
        cfg = LlamaConfig.from_dict(ckpt.config, prefill_chunk_size=8)
        quant = ggml_quantization(ckpt, cfg)
    else:
        ckpt = ArrayCheckpoint(tiny.weights)
        cfg = LlamaConfig.from_dict(tiny.config, prefill_chunk_size=8)
        quant = as_quantization(source)
    ex = export_model(cfg, quant, tvm.target.Target({"kind": "llvm"}))
    records = list(param_records(ckpt, cfg, quant))
    cpu_mod = specialize_for_cpu(ex.mod, tvm.target.Target({"kind": "llvm"}))
    replaced = [gv.name_hint for gv in ex.mod.get_global_vars()
                if gv.name_hint.startswith("dequant_") and not cpu_mod[gv].same_as(ex.mod[gv])]
    assert any(n.startswith("dequant_take") for n in replaced) and any(n.startswith("dequant_lm_head") for n in replaced)
    got = _logits(cpu_mod, ex, list(cpu_param_records(records)), cfg)
    want = LlamaReference(_hf_weights(dict(records), cfg, quant), tiny.config).forward(PROMPT + FORCED)[len(PROMPT) - 1:]
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)
