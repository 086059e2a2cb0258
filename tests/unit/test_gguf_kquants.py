"""GGUF block types beyond Q4_0/Q4_1/Q8_0: F16, BF16, Q5_0, Q5_1 and the K-quants Q4_K, Q5_K, Q6_K.

The project's numpy decoder (``quant/ggml.py``) is checked bit for bit against PyPI ``gguf``'s own dequantizer on
random block bytes (every bit pattern of codes, scales and high bits; finite float16 scales); Q4_K repacks to
``q4_1`` exactly and Q6_K to ``q8_0`` within half an 8-bit step. Whole Q4_K_M and Q8_0 files of every family, their
``ggml`` builds and the logit error of each compile choice: ``test_gguf_families.py`` (reader and weights) and
``tests/browser/test_family_logits.py`` (compiled, in the page).
"""
from __future__ import annotations

import numpy as np
import pytest

from kquants import quantize_k
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
