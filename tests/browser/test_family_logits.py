"""Every model family, built by ``webllm-widget build`` from a tiny checkpoint, matches the numpy reference in
the browser: on WebGPU (SwiftShader, the software-adapter schedule the widget picks there) and on the page's CPU.

Each case (``tests/helpers/families.py``) is a checkpoint written by an independent writer (safetensors here,
PyPI ``gguf``'s writer for GGUF files: each family in llama.cpp's Q4_K_M mix and in Q8_0, built in the ``ggml``
mode); its model folder is built through ``build_model_folder`` (what the CLI calls) and cached by content hash.
A GGUF case also prints its error against the file's exact weights (``gguf``'s dequantizer): what re-quantizing its
Q5_*/Q6_K matrices to 8 bits costs.

Each new model library costs a TVM build (measured on the shared 2-core machine: ~16 s for WebGPU, ~45 s for the
CPU's two builds) and SwiftShader compiles its shaders in the page (12-95 s a case on the loaded machine), so CI runs
the HF cases, the Q4_K_M GGUF of Llama (WebGPU and CPU), Phi-3 (fused Q5_K attn_qkv, LongRoPE from the file) and
Gemma 3 (norms stored as 1 + w, tied Q6_K embedding) on WebGPU (:data:`CI_GGUF`); the other GGUF cases (Qwen2.5 and
Qwen3, Gemma 2, Q8_0 everywhere, the CPU for five families) carry the ``full_matrix`` marker and run with ``--full-matrix``
(or ``WEBLLM_WIDGET_FULL_MATRIX=1``); ``tests/unit/test_gguf_families.py`` reads all of them without a browser.

Logits of a 20-token prompt and three forced tokens are compared with the reference run on exactly the weights the build holds (the 4-bit group values for ``q4f32_1``). Tolerance: 2e-3 of
the largest |logit| (absolute). SwiftShader's ``exp``/``inverseSqrt`` are approximations whose error grows with the
activations' scale; measured worst 6.8e-4 of it (qwen2.5 on WebGPU: 9.9e-3 on logits up to 14.7; GGUF cases up to 7.9e-4,
phi3 Q4_K_M), the page CPU (its SIMD128 build, 16-bit activation blocks) below 2e-4 of it. One page per browser serves every case.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from cpu_page import serve_cpu_model, teacher_forced
from families import ALL_CASES, GGUF_CASES, build
from llama_native import FORCED, PROMPT, reference_logits
from webgpu_model import run_folder_in_browser
from webllm_widget.compile.arch import registry

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def gpu_page(host_server, chromium):
    page = chromium.new_page()
    page.goto(host_server.origin + "/blank.html")
    yield page
    page.close()


@pytest.fixture(scope="module")
def cpu_page(host_server, chromium_no_webgpu):
    page = chromium_no_webgpu.new_page()
    page.goto(host_server.origin + "/blank.html")
    yield page
    page.close()


#: GGUF (case, device) pairs CI runs; the rest of the matrix is opt-in (``full_matrix``). The other families'
#: GGUF readers are checked without a browser (tests/unit/test_gguf_families.py: the built folder holds exactly
#: the weights the reference runs), their maths by the HF cases below.
CI_GGUF = {("llama-gguf-q4_k_m", "webgpu"), ("llama-gguf-q4_k_m", "cpu")}
#: HF families whose page-CPU case is opt-in: their model graph is the one the WebGPU case checks, compiled for
#: wasm, and the CPU kernels they use (quantized products, plain causal attention) are checked by the Llama,
#: Mistral (windowed attention) and Gemma 2 (soft-capped attention) CPU cases CI runs.
OPTIN_CPU = {"qwen2.5-hf", "qwen3-hf", "phi3-hf", "gemma3-hf"}


def _params():
    for case in ALL_CASES:
        for device in ("webgpu", "cpu"):
            optin = (case in GGUF_CASES and (case, device) not in CI_GGUF) or (device == "cpu" and case in OPTIN_CPU)
            yield pytest.param(case, device, id=f"{case}-{device}",
                               marks=[pytest.mark.full_matrix] if optin else [])


@pytest.mark.parametrize("case, device", list(_params()))
def test_family_logits_in_the_browser_match_the_reference(request, host_server, case, device):
    c = ALL_CASES[case]
    folder, weights, config = build(case, device)
    chat = json.loads((folder / "mlc-chat-config.json").read_text())
    cfg = registry.config_from_dict(config, prefill_chunk_size=chat["prefill_chunk_size"],
                                    context_window_size=chat["context_window_size"])
    if device == "webgpu":
        got, _ = run_folder_in_browser(host_server, request.getfixturevalue("gpu_page"), folder, cfg)
    else:
        base = serve_cpu_model(host_server, f"family-{case}", folder / "model.wasm", folder)
        out = teacher_forced(request.getfixturevalue("cpu_page"), base, PROMPT, FORCED, tag=case)
        assert out["no_webgpu"]
        got = out["logits"]
    want = reference_logits(weights, config)
    err, scale = float(np.abs(got - want).max()), float(np.abs(want).max())
    print(f"{case} {device}: max |logit error| {err:.2e} (logits up to {scale:.1f}: {err / scale:.1e} of it)")
    if c.gguf is not None:
        exact = float(np.abs(got - reference_logits(c.gguf.exact, config)).max())
        print(f"{case} {device}: against the file's exact weights {exact:.2e} ({exact / scale:.1e} of the largest)")
    np.testing.assert_allclose(got, want, atol=2e-3 * scale, rtol=0)
