"""Quantization modes: packing round trips, and the quantized modules compiled natively against numpy.

Tolerances: a quantized module must reproduce the reference run on the weights it actually holds
(dequantized in numpy) to 1e-3, like q0f32: the kernels add no error of their own. The error the
4-bit quantization itself causes is measured and reported, not bounded tightly.
"""
from __future__ import annotations

import numpy as np
import pytest

from llama_native import ArrayCheckpoint, reference_logits, run_native
from tiny import TinyLlama
from webllm_widget.compile.arch.llama.config import LlamaConfig
from webllm_widget.compile.params import param_records
from webllm_widget.compile.quant.ggml import ggml_blocks, ggml_quantization
from webllm_widget.compile.quant.modes import Quantization
from webllm_widget.compile.quant.packing import dequantize, quantize_q4
from webllm_widget.errors import BadModel


def test_q4_packing_round_trips_within_half_a_step_per_group():
    w = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)
    packed = quantize_q4(w)
    assert packed["q_weight"].dtype == np.uint32 and packed["q_weight"].shape == (16, 8)
    assert packed["q_scale"].shape == (16, 2)
    back = dequantize("q4", packed)
    step = np.repeat(packed["q_scale"], 32, axis=1)
    assert (np.abs(back - w) <= step / 2 + 1e-6).all()


@pytest.mark.parametrize("kind,fmt", [("Q4_1", None), ("Q4_0", None), ("Q8_0", None), ("Q4_0", "q4")])
def test_gguf_blocks_repack_exactly(kind, fmt, monkeypatch):
    """Each block type in its natural format, and Q4_0 in the symmetric ``q4`` (the page CPU's: complemented nibbles,
    negated scale), equal bit for bit to PyPI gguf's dequantizer."""
    monkeypatch.setattr("webllm_widget.compile.quant.ggml._ROWS_PER_CHUNK", 3)  # chunk edges inside the tensor
    import gguf

    w = np.random.default_rng(1).standard_normal((8, 96)).astype(np.float32)
    qtype = gguf.GGMLQuantizationType[kind]
    blocks = gguf.quants.quantize(w, qtype)
    want = gguf.quants.dequantize(blocks, qtype).reshape(w.shape)

    class T:
        shape, ggml_type = w.shape, kind
        raw = np.frombuffer(np.ascontiguousarray(blocks).tobytes(), np.uint8)

    got_fmt, arrays = ggml_blocks(T, fmt)
    assert got_fmt == (fmt or ("q8_0" if kind == "Q8_0" else "q4_1"))
    assert set(arrays) == ({"q_weight", "q_scale", "q_min"} if got_fmt == "q4_1" else {"q_weight", "q_scale"})
    np.testing.assert_array_equal(dequantize(got_fmt, arrays), want)


def test_truncated_blocks_are_a_bad_model_error():
    class T:
        shape, ggml_type = (4, 64), "Q4_1"
        raw = np.zeros(4 * 2 * 20 - 3, np.uint8)

    with pytest.raises(BadModel, match="truncated or corrupt"):
        ggml_blocks(T)


def test_unknown_mode_is_a_bad_model_error():
    with pytest.raises(BadModel, match="q4f32_1"):
        Quantization("q3f32")


def test_q4f32_1_module_is_exact_on_its_dequantized_weights_and_reports_quantization_error():
    tiny = TinyLlama.make(seed=0)
    got, ex = run_native(tiny, "q4f32_1")
    names = [p["name"] for p in ex.metadata["params"]]
    assert "model.layers.0.self_attn.qkv_proj.q_weight" in names and "model.embed_tokens.q_scale" in names
    deq = {k: (dequantize("q4", quantize_q4(v)) if v.ndim == 2 else v) for k, v in tiny.weights.items()}
    np.testing.assert_allclose(got, reference_logits(deq, tiny.config), atol=1e-3, rtol=0)
    err = np.abs(got - reference_logits(tiny.weights, tiny.config)).max()
    print(f"q4f32_1 vs float32 weights: max |logit error| {err:.2f}")
    assert err > 1e-3  # the weights really are 4-bit


@pytest.mark.parametrize("matrix_type", ["Q4_1", "Q4_0", "Q8_0"])
def test_ggml_mode_keeps_the_gguf_blocks_and_matches_the_file_weights(tmp_path, matrix_type):
    from webllm_widget.compile.checkpoint import open_checkpoint

    tiny = TinyLlama.make(seed=3)
    ckpt = open_checkpoint(tiny.write_gguf(tmp_path / "t.gguf", matrix_type=matrix_type, embed_type="Q8_0"))
    cfg = LlamaConfig.from_dict(ckpt.config, prefill_chunk_size=8)
    quant = ggml_quantization(ckpt, cfg)
    want_fmt = "q8_0" if matrix_type == "Q8_0" else "q4_1"
    assert dict(quant.formats)["model.layers.1.mlp.down_proj"] == want_fmt
    # the page's CPU path stores Q4_0 matrices in the symmetric q4 layout (4 bytes a group less), the rest alike
    cpu_fmt = "q4" if matrix_type == "Q4_0" else want_fmt
    assert set(dict(ggml_quantization(ckpt, cfg, device="cpu").formats).values()) == {cpu_fmt, "q8_0"}
    got, ex = run_native(tiny, checkpoint=ckpt, quant=quant)
    assert ex.metadata["quantization"] == "ggml"
    np.testing.assert_allclose(got, reference_logits(tiny.gguf_weights, tiny.config), atol=1e-3, rtol=0)


def test_param_records_match_the_metadata_names_shapes_and_dtypes():
    from webllm_widget.compile.model_lib import export_model

    tiny = TinyLlama.make(seed=0, tie=False, bias=True, arch="qwen2")
    cfg = LlamaConfig.from_dict(tiny.config)
    for mode in ("q0f32", "q4f32_1", "q4f16_1"):
        meta = export_model(cfg, mode, "llvm").metadata
        recs = list(param_records(ArrayCheckpoint(tiny.weights), cfg, mode))
        assert [n for n, _ in recs] == [p["name"] for p in meta["params"]]
        for (_, a), p in zip(recs, meta["params"]):
            assert list(a.shape) == p["shape"] and str(a.dtype) == p["dtype"]


def test_q4f16_1_module_runs_in_float16_close_to_its_dequantized_weights():
    """float16 activations and KV cache: 1e-2 relative to the logits' range (f16 has an 11-bit mantissa)."""
    tiny = TinyLlama.make(seed=0)
    got, ex = run_native(tiny, "q4f16_1")
    assert {p["dtype"] for p in ex.metadata["params"]} == {"uint32", "float16"}
    deq = {k: (dequantize("q4", quantize_q4(v, "float16")) if v.ndim == 2 else v) for k, v in tiny.weights.items()}
    want = reference_logits(deq, tiny.config)
    err = np.abs(got - want).max()
    print(f"q4f16_1 vs its dequantized weights (float32 reference): max |logit error| {err:.3f}")
    assert err < 1e-2 * np.abs(want).max()
