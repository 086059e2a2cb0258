"""GGUF block types beyond Q4_0/Q4_1/Q8_0: F16, BF16, Q5_0, Q5_1 and the K-quants Q4_K, Q5_K, Q6_K.

The project's numpy decoder (``quant/ggml.py``) is checked bit for bit against PyPI ``gguf``'s own dequantizer on
random block bytes (every bit pattern of codes, scales and high bits; finite float16 scales). A tiny Q4_K_M-style
file (Q4_K + Q6_K blocks, written with ``gguf``'s writer and the tests' K-quant quantizer, read back with
``gguf``'s dequantizer) compiles in the ``ggml`` mode and its logits match the reference.

Measured on that tiny model (random Gaussian weights, logits up to ~3.4), against the exact file weights:
``ggml`` (Q4_K kept exactly as ``q4_1``, Q6_K re-quantized to ``q8_0``) 0.105 max |logit error|, ``q4f32_1``
(everything re-quantized to 4 bits) 2.03; the ``ggml`` build against the weights it holds 7.5e-6.
"""
from __future__ import annotations

import numpy as np
import pytest

from families import Q4_K_M_TYPES, ggml_built_weights, q4_k_m_tiny
from kquants import quantize_k
from llama_native import reference_logits, run_native
from webllm_widget.compile.checkpoint import open_checkpoint
from webllm_widget.compile.quant.ggml import BLOCK_BYTES, decode, ggml_blocks, ggml_quantization
from webllm_widget.compile.quant.packing import dequantize

gguf = pytest.importorskip("gguf")

#: where each block type keeps its float16 scales (byte offsets)
_F16_AT = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "Q4_K": [0, 2], "Q5_K": [0, 2],
           "Q6_K": [208]}


def _random_blocks(kind: str, n_blocks: int, rng) -> np.ndarray:
    raw = rng.integers(0, 256, (n_blocks, BLOCK_BYTES[kind][1]), dtype=np.uint8)
    for at in _F16_AT[kind]:
        d = rng.uniform(1e-3, 2, n_blocks) * rng.choice([-1, 1], n_blocks)
        raw[:, at:at + 2] = d.astype("<f2").view(np.uint8).reshape(n_blocks, 2)
    return raw


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"])
def test_block_decoding_matches_gguf_bit_for_bit(kind):
    per = BLOCK_BYTES[kind][0]
    raw = _random_blocks(kind, 4 * 2048 // per, np.random.default_rng(7))
    want = gguf.quants.dequantize(raw.reshape(4, -1), gguf.GGMLQuantizationType[kind]).astype(np.float32)
    got = decode(raw.reshape(-1), kind, want.shape)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("kind", ["F16", "BF16"])
def test_float_types_match_gguf(kind):
    rng = np.random.default_rng(8)
    raw = rng.integers(0, 256, (4, 64), dtype=np.uint8)
    raw[:, 1::2] &= 0x3F  # keep the exponents finite
    want = gguf.quants.dequantize(raw.reshape(4, -1), gguf.GGMLQuantizationType[kind]).astype(np.float32)
    np.testing.assert_array_equal(decode(raw.reshape(-1), kind, want.shape), want)


class _T:
    def __init__(self, kind, blocks, shape):
        self.ggml_type, self.shape = kind, shape
        self.raw = np.frombuffer(np.ascontiguousarray(blocks).tobytes(), np.uint8)

    def to_numpy(self):
        return decode(self.raw, self.ggml_type, self.shape)


def test_q4_k_repacks_to_q4_1_exactly_and_q6_k_to_q8_0_within_half_a_step():
    w = np.random.default_rng(9).standard_normal((6, 512)).astype(np.float32)
    for kind in ("Q4_K", "Q6_K"):
        blocks = quantize_k(w, kind)
        exact = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[kind])
        assert np.abs(exact - w).max() < 0.3, "the tests' K-quant writer must quantize sensibly"
        fmt, arrays = ggml_blocks(_T(kind, blocks, w.shape))
        got = dequantize(fmt, arrays)
        if kind == "Q4_K":
            assert fmt == "q4_1"
            np.testing.assert_array_equal(got, exact)
        else:
            assert fmt == "q8_0"
            step = np.abs(exact.reshape(6, -1, 32)).max(axis=-1, keepdims=True) / 127
            assert np.all(np.abs(got - exact).reshape(6, -1, 32) <= step / 2 * (1 + 1e-6))
    with pytest.raises(Exception, match="cannot be stored as q4_1"):
        ggml_blocks(_T("Q6_K", quantize_k(w, "Q6_K"), w.shape), "q4_1")


def test_q4_k_m_gguf_compiles_in_the_ggml_mode_and_matches_the_reference(tmp_path):
    tiny = q4_k_m_tiny()
    ckpt = open_checkpoint(tiny.write_gguf(tmp_path / "t.gguf", matrix_type="Q4_K", embed_type="Q4_K",
                                           block_types=Q4_K_M_TYPES))
    assert {ckpt.get(n).ggml_type for n in ckpt.tensor_names() if ckpt.get(n).shape[1:]} == {"Q4_K", "Q6_K"}
    quant = ggml_quantization(ckpt)
    formats = dict(quant.formats)
    # Q4_K alone: kept exactly; a Q6_K part (alone or stacked with Q4_K q/k): re-quantized to 8 bits
    assert formats["model.layers.1.self_attn.qkv_proj"] == "q4_1" and formats["model.embed_tokens"] == "q4_1"
    assert formats["model.layers.0.self_attn.qkv_proj"] == "q8_0" and formats["lm_head"] == "q8_0"
    got, _ = run_native(tiny, checkpoint=ckpt, config=ckpt.config, quant=quant)
    want = reference_logits(ggml_built_weights(ckpt, tiny.gguf_weights), tiny.config)
    exact = reference_logits(tiny.gguf_weights, tiny.config)
    print(f"Q4_K_M ggml: max |logit error| {np.abs(got - want).max():.1e} vs the weights it holds, "
          f"{np.abs(got - exact).max():.3f} vs the file's exact weights")
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)
