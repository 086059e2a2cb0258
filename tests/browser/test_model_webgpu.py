"""The tiny Llama compiled for WebGPU runs in headless Chromium (SwiftShader) and matches the numpy reference.

The page loads the model library with tvmjs exactly as web-llm does (instantiate, initWebGPU,
VM on webgpu, load pipelines), uploads the parameter records, creates the KV cache through
``create_tir_paged_kv_cache`` and calls ``embed``/``prefill``/``decode`` with web-llm's argument
order, prefilling in chunks of ``prefill_chunk_size``. Then one greedy sampling step runs on the
GPU through ``softmax_with_temperature`` → ``argsort_probs`` → ``sample_with_top_p``.

Tolerances (teacher-forced logits, magnitude ~15):
- ``q0f32``: 1e-2 absolute (relative ~6e-4). Same weights as the reference; the natively compiled
  module agrees to 1.5e-5, the browser to 3.3e-3 (measured): WGSL leaves the precision of
  ``exp``/``inverseSqrt`` to the implementation and SwiftShader's are approximations, which the
  attention softmax and RMSNorm feed through two layers.
- ``q4f32_1``: 1e-2 against the reference run on the dequantized 4-bit weights (kernel exactness);
  the error against the float32 weights is the quantization's own (measured ~8 on random
  Gaussian weights, whose groups have no structure) and is only reported.
- ``ggml``: 1e-2 against the reference on the weights the GGUF file holds: the file's blocks are
  kept exactly, so nothing but summation order differs.
"""
from __future__ import annotations

import numpy as np
import pytest

from llama_native import ArrayCheckpoint, reference_logits
from webgpu_model import run_in_browser, tiny_library
from webllm_widget.compile.model_lib import export_model
from webllm_widget.compile.params import param_records
from webllm_widget.compile.quant.packing import dequantize, quantize_q4

pytestmark = pytest.mark.browser


def test_q0f32_logits_on_webgpu_match_numpy_reference(host_server, chromium):
    tiny, _, cfg, _, lib = tiny_library("q0f32")
    ex = export_model(cfg, "q0f32")
    got, out = run_in_browser(host_server, chromium, lib, param_records(ArrayCheckpoint(tiny.weights), cfg, "q0f32"),
                              ex.metadata, cfg)
    want = reference_logits(tiny.weights, tiny.config)
    err = float(np.abs(got - want).max())
    print(f"q0f32 webgpu max |logit error| = {err:.2e}")
    np.testing.assert_allclose(got, want, atol=1e-2, rtol=0)
    assert out["sampled"] == int(np.argmax(want[0]))  # greedy sample after the prompt
    assert out["quantization"] == "q0f32" and out["meta_params"] == len(ex.metadata["params"])


def test_decode_attention_for_hardware_gpus_over_a_long_context(host_server, chromium):
    """The hardware build's decode attention (schedules.decode_attention_gpu: 64 threads a query head, each taking
    4 positions a step, partial softmax states merged through shared memory) after a 300-token prompt: the context
    is past one slice of 64 positions, so each decode step splits it across five workgroups per query head (the
    last slice only partly filled) and merges them by their lse in a second kernel; the logits of the decode
    steps match numpy's (a merge that ignores the lse gave errors of ~15)."""
    tiny, _, cfg, _, lib = tiny_library("q0f32-long", schedule="auto")  # context 512, prefill chunks of 64
    ex = export_model(cfg, "q0f32")
    rng = np.random.default_rng(5)
    prompt = [int(t) for t in rng.integers(3, 200, 300)]
    forced = [7, 11]
    got, out = run_in_browser(host_server, chromium, lib, param_records(ArrayCheckpoint(tiny.weights), cfg, "q0f32"),
                              ex.metadata, cfg, prompt=prompt, forced=forced)
    want = reference_logits(tiny.weights, tiny.config, prompt, forced)
    print(f"q0f32 webgpu (auto), 300-token context: max |logit error| = {np.abs(got - want).max():.2e}; "
          f"kernel launches a decode step {out['decode_launches']}")
    np.testing.assert_allclose(got, want, atol=1e-2, rtol=0)
    # a float model keeps its SwiGLU kernel (8 launches a layer, see the q4f32_1 case), its norms are computed inside
    # the q/k/v, gate/up and LM head products; the split context adds the merge of the slices: 9 a layer, + 2
    # (embedding, LM head with the final norm)
    assert out["decode_launches"] == [9 * tiny.config["num_hidden_layers"] + 2] * len(forced)


@pytest.mark.parametrize("schedule", ["auto", "fallback"])
def test_q4f32_1_logits_on_webgpu_match_dequantized_reference(host_server, chromium, schedule):
    # head_dim 32: the prompt's later chunks are merged with the cached part by the KV cache's merge kernel, whose
    # TVM version raced on the lse for heads wider than 16 (compile/schedules.py, merge_state_fallback)
    tiny, _, cfg, _, lib = tiny_library("q4f32_1", schedule)  # head_dim 32, prefill chunks of 8
    ex = export_model(cfg, "q4f32_1")
    got, out = run_in_browser(host_server, chromium, lib, param_records(ArrayCheckpoint(tiny.weights), cfg, "q4f32_1"),
                              ex.metadata, cfg)
    deq = {k: (dequantize("q4", quantize_q4(v)) if v.ndim == 2 else v) for k, v in tiny.weights.items()}
    want = reference_logits(deq, tiny.config)
    print(f"q4f32_1 webgpu: max |error| vs dequantized reference {np.abs(got - want).max():.2e}, "
          f"vs float32 weights {np.abs(got - reference_logits(tiny.weights, tiny.config)).max():.2f}")
    np.testing.assert_allclose(got, want, atol=1e-2, rtol=0)
    assert out["sampled"] == int(np.argmax(want[0]))
    # kernel launches of a decode step (the engine's dispatch counts them): embedding and LM head, and per layer the
    # q/k/v, output, gate/up and down products and the KV cache's three (rotary split, append, attention; a context
    # this short is not split). The software adapters' schedule adds the two norms a layer and the final one, and the
    # SwiGLU on its own; the hardware library computes each norm inside the product that reads it and the SwiGLU
    # inside the down projection
    per_layer, once = (7, 2) if schedule == "auto" else (10, 3)
    layers = tiny.config["num_hidden_layers"]
    print(f"q4f32_1 {schedule}: kernel launches a decode step {out['decode_launches']} "
          f"({(out['decode_launches'][0] - once) / layers:g} a layer + {once})")
    assert out["decode_launches"] == [per_layer * layers + once] * len(out["decode_launches"])


#: opt-in (full_matrix): the software adapters' ggml path is test_schedules_prefill's ggml case (the same tiny GGUF
#: layout, Q4_1 matrices and a Q8_0 embedding, fallback schedule, logits against the file's weights, in chunks of 7
#: that each end in a partial token tile) and test_smollm2_webgpu_logits (the built-in model's file)
@pytest.mark.parametrize("schedule", ["auto", pytest.param("fallback", marks=pytest.mark.full_matrix)])
def test_lossless_ggml_logits_on_webgpu_match_the_gguf_weights_exactly(host_server, chromium, tmp_path, schedule):
    tiny, ckpt, cfg, quant, lib = tiny_library("ggml", schedule, tmp_path)  # Q4_1 matrices, Q8_0 embedding
    assert dict(quant.formats)["model.embed_tokens"] == "q8_0"
    ex = export_model(cfg, quant)
    got, out = run_in_browser(host_server, chromium, lib, param_records(ckpt, cfg, quant), ex.metadata, cfg)
    want = reference_logits(tiny.gguf_weights, tiny.config)
    print(f"ggml webgpu max |logit error| vs GGUF weights = {np.abs(got - want).max():.2e}; "
          f"kernel launches a decode step {out['decode_launches']}")
    np.testing.assert_allclose(got, want, atol=1e-2, rtol=0)
    assert out["quantization"] == "ggml"
    if schedule == "auto":  # the norms inside the products that read them, the final one inside the tied LM head
        assert out["decode_launches"] == [7 * tiny.config["num_hidden_layers"] + 2] * len(out["decode_launches"])
