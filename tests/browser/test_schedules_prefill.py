"""Prefill on a software adapter: the token-tiled matrix products (schedules.TokenTileGemm) give the reference logits.

The tiny Llama is built with ``schedule="fallback"`` and a prefill chunk of 7 tokens, so the 20-token
prompt arrives as chunks of 7, 7 and 6: every chunk ends in a partial tile of tokens (tiles of
``TokenTileGemm().tokens``), which is where a wrong guard or a wrong padding would show. First the
compiled library is checked to hold the token-tiled kernels for the prefill products (the WGSL of each
prefill matmul keeps a whole tile of activations, ``tokens x 32`` floats, in a local array); then the page
runs it on SwiftShader and the logits after the prompt and three teacher-forced tokens are compared with
the numpy reference, at the tolerances of tests/browser/test_model_webgpu.py (1e-2 absolute on logits of
magnitude ~15; the kernels keep the weights exact, only the summation order differs).
"""
from __future__ import annotations

import numpy as np
import pytest

from llama_native import ArrayCheckpoint, reference_logits
from tiny import TinyLlama
from webgpu_model import run_in_browser
from webllm_widget.compile.build import wgsl_sources
from webllm_widget.compile.arch.llama.config import LlamaConfig
from webllm_widget.compile.model_lib import build_model_library, compile_model, export_model
from webllm_widget.compile.params import param_records
from webllm_widget.compile.quant.ggml import ggml_quantization
from webllm_widget.compile.quant.packing import dequantize, quantize_q4
from webllm_widget.compile.schedules import TokenTileGemm

pytestmark = pytest.mark.browser

CHUNK = 7  # 20 prompt tokens -> chunks 7, 7, 6: each ends in a partial tile


def _prefill_kernels_are_token_tiled(cfg: LlamaConfig, quant) -> list[str]:
    """Names of the prefill matmul kernels; asserts each keeps a tile of tokens' activations in registers."""
    ex = export_model(cfg, quant, "webgpu", "fallback")
    wgsl = wgsl_sources(compile_model(ex, "webgpu", "fallback"))
    tile = f"array<f32, {TokenTileGemm().tokens * 32}>"
    tiled = []
    for name, src in wgsl.items():
        if "matmul" in name and "seq_len" in src:  # a product over the prompt's tokens (decode has one)
            assert tile in src, f"{name}: prefill product not token-tiled"
            tiled.append(name)
    return tiled


def _check(host_server, chromium, cfg, quant, records, want):
    tiled = _prefill_kernels_are_token_tiled(cfg, quant)
    assert len(tiled) >= 4, tiled  # qkv, o (+residual), gate_up, down (+residual)
    lib = build_model_library(cfg, quant, schedule="fallback", progress=False)
    ex = export_model(cfg, quant, "webgpu", "fallback")
    got, out = run_in_browser(host_server, chromium, lib, records, ex.metadata, cfg)
    err = float(np.abs(got - want).max())
    print(f"{getattr(quant, 'name', quant)} fallback prefill chunk {CHUNK}: max |logit error| {err:.2e}, "
          f"token-tiled kernels {sorted(tiled)}")
    np.testing.assert_allclose(got, want, atol=1e-2, rtol=0)
    assert out["sampled"] == int(np.argmax(want[0]))


@pytest.mark.full_matrix  # opt-in: the ggml case below (chunks of 7, 7, 6) uses the same token tiles and guards
def test_float_prefill_with_partial_token_tiles_matches_reference(host_server, chromium):
    tiny = TinyLlama.make(seed=1)
    cfg = LlamaConfig.from_dict(tiny.config, prefill_chunk_size=CHUNK)
    _check(host_server, chromium, cfg, "q0f32", param_records(ArrayCheckpoint(tiny.weights), cfg, "q0f32"),
           reference_logits(tiny.weights, tiny.config))


@pytest.mark.full_matrix  # opt-in: test_smollm2_webgpu_logits prefills 37 tokens (a partial tile) through these q4 products
def test_q4_prefill_with_partial_token_tiles_matches_dequantized_reference(host_server, chromium):
    tiny = TinyLlama.make(seed=1)
    cfg = LlamaConfig.from_dict(tiny.config, prefill_chunk_size=CHUNK)
    deq = {k: (dequantize("q4", quantize_q4(v)) if v.ndim == 2 else v) for k, v in tiny.weights.items()}
    _check(host_server, chromium, cfg, "q4f32_1", param_records(ArrayCheckpoint(tiny.weights), cfg, "q4f32_1"),
           reference_logits(deq, tiny.config))


def test_ggml_prefill_with_partial_token_tiles_matches_gguf_weights(host_server, chromium, tmp_path):
    from webllm_widget.compile.checkpoint import open_checkpoint

    tiny = TinyLlama.make(seed=1)
    ckpt = open_checkpoint(tiny.write_gguf(tmp_path / "tiny.gguf", matrix_type="Q4_1", embed_type="Q8_0"))
    cfg = LlamaConfig.from_dict(ckpt.config, prefill_chunk_size=CHUNK)
    quant = ggml_quantization(ckpt, cfg)
    _check(host_server, chromium, cfg, quant, param_records(ckpt, cfg, quant), reference_logits(tiny.gguf_weights, tiny.config))
