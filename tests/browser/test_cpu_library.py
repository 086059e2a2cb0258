"""The model libraries built for the page's CPU (wasm32 SIMD128, and relaxed SIMD) run in headless Chromium
without WebGPU.

Teacher-forced logits of the tiny random Llama in the lossless GGUF mode (Q4_1 matrices, Q8_0
embedding) against the numpy reference run on exactly the weights the GGUF file holds, with each matrix
product's input rounded to integer blocks as the kernels do (``activations``); tolerances in
``reference.check_integer_activation_logits``.
"""
from __future__ import annotations

import numpy as np
import pytest

from cpu_page import serve_cpu_model, teacher_forced, tiny_ggml_cpu_library
from reference import LlamaReference, check_integer_activation_logits
from webllm_widget.compile.cpu import ISAS, cpu_param_records
from webllm_widget.compile.params import param_records
from webllm_widget.compile.tensor_cache import write_tensor_cache

PROMPT = list(range(3, 25))  # 22 tokens: chunks of 8, 8, 6 (the last ends in a partial 4-token tile)
FORCED = [5, 77, 100]


@pytest.fixture(scope="module", params=ISAS)
def tiny_cpu_model(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-cpu")
    tiny, ckpt, cfg, quant, wasm = tiny_ggml_cpu_library(d, request.param)  # cached after the first build (~1 min)
    folder = d / "folder"
    folder.mkdir()
    write_tensor_cache(folder, cpu_param_records(param_records(ckpt, cfg, quant)))
    return tiny, wasm, folder, request.param


@pytest.fixture
def cpu_page(host_server, chromium_no_webgpu):
    page = chromium_no_webgpu.new_page()
    page.goto(host_server.origin + "/blank.html")
    yield page
    page.close()


@pytest.mark.browser
def test_tiny_llama_on_the_page_cpu_matches_numpy_reference_teacher_forced(host_server, cpu_page, tiny_cpu_model):
    tiny, wasm, folder, isa = tiny_cpu_model
    base = serve_cpu_model(host_server, f"tiny-ggml-{isa}", wasm, folder)
    out = teacher_forced(cpu_page, base, PROMPT, FORCED)
    assert out["no_webgpu"], "this browser should have no navigator.gpu: the test is about the CPU path"
    # integer activation blocks: value + residue bytes into the relaxed build's byte dot products (4-bit weights),
    # else 16 bits
    bits = {"*": "int8x2", "lm_head": 16} if isa == "relaxed-simd" else 16
    want = LlamaReference(tiny.gguf_weights, tiny.config, activations=bits).forward(PROMPT + FORCED)[len(PROMPT) - 1:]
    assert out["logits"].shape == want.shape
    exact = LlamaReference(tiny.gguf_weights, tiny.config).forward(PROMPT + FORCED)[len(PROMPT) - 1:]
    check_integer_activation_logits(out["logits"], want, exact)


def test_only_the_relaxed_build_needs_relaxed_simd(tiny_cpu_model, tmp_path):
    """Node 20's V8 has relaxed SIMD behind a flag: a real engine without it must accept the SIMD128 build (so
    browsers without relaxed SIMD can run it) and refuse the relaxed one unless the flag turns it on."""
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    _, wasm, _, isa = tiny_cpu_model
    script = tmp_path / "validate.js"
    script.write_text("process.stdout.write(String(WebAssembly.validate(require('fs').readFileSync(process.argv[2]))))")
    probe = subprocess.run([node, "-p", "process.versions.v8"], capture_output=True, text=True).stdout.strip()
    if int(probe.split(".")[0]) >= 12:  # V8 11.4+ ships relaxed SIMD without a flag
        pytest.skip(f"node's V8 {probe} always has relaxed SIMD")
    off = subprocess.run([node, str(script), str(wasm)], capture_output=True, text=True).stdout
    on = subprocess.run([node, "--experimental-wasm-relaxed-simd", str(script), str(wasm)],
                        capture_output=True, text=True).stdout
    assert on == "true", "the library must validate where relaxed SIMD is on"
    assert off == ("true" if isa == "simd128" else "false"), (isa, off)
