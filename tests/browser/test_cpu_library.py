"""The model library built for the page's CPU (wasm32 + SIMD128) runs in headless Chromium without WebGPU.

Teacher-forced logits of the tiny random Llama in the lossless GGUF mode (Q4_1 matrices, Q8_0
embedding) against the numpy reference run on exactly the weights the GGUF file holds. Tolerance
1e-3 absolute, as for the model compiler's float32 checks (logits of magnitude ~15).
"""
from __future__ import annotations

import numpy as np
import pytest

from cpu_page import serve_cpu_model, teacher_forced
from reference import LlamaReference
from tiny import TinyLlama
from webllm_widget.compile.cpu import build_cpu_library, cpu_param_records
from webllm_widget.compile.arch.llama.config import LlamaConfig
from webllm_widget.compile.params import param_records
from webllm_widget.compile.quant.ggml import ggml_quantization
from webllm_widget.compile.tensor_cache import write_tensor_cache
from webllm_widget.compile.checkpoint import open_checkpoint

PROMPT = list(range(3, 25))  # 22 tokens: chunks of 8, 8, 6 (the last ends in a partial 4-token tile)
FORCED = [5, 77, 100]


@pytest.fixture(scope="module")
def tiny_cpu_model(tmp_path_factory):
    tiny = TinyLlama.make(seed=1)
    d = tmp_path_factory.mktemp("tiny-cpu")
    ckpt = open_checkpoint(tiny.write_gguf(d / "t.gguf"))
    cfg = LlamaConfig.from_dict(ckpt.config, prefill_chunk_size=8)
    quant = ggml_quantization(ckpt, cfg)
    wasm = build_cpu_library(cfg, quant, progress=False)  # cached after the first build (~1-6 min link)
    folder = d / "folder"
    folder.mkdir()
    write_tensor_cache(folder, cpu_param_records(param_records(ckpt, cfg, quant)))
    return tiny, wasm, folder


@pytest.fixture
def cpu_page(host_server, chromium_no_webgpu):
    page = chromium_no_webgpu.new_page()
    page.goto(host_server.origin + "/blank.html")
    yield page
    page.close()


@pytest.mark.browser
def test_tiny_llama_on_the_page_cpu_matches_numpy_reference_teacher_forced(host_server, cpu_page, tiny_cpu_model):
    tiny, wasm, folder = tiny_cpu_model
    base = serve_cpu_model(host_server, "tiny-ggml", wasm, folder)
    out = teacher_forced(cpu_page, base, PROMPT, FORCED)
    assert out["no_webgpu"], "this browser should have no navigator.gpu: the test is about the CPU path"
    want = LlamaReference(tiny.gguf_weights, tiny.config).forward(PROMPT + FORCED)[len(PROMPT) - 1:]
    assert out["logits"].shape == want.shape
    np.testing.assert_allclose(out["logits"], want, atol=1e-3, rtol=0)
