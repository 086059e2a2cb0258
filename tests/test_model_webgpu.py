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

from reference import LlamaReference
from test_llama_native import FORCED, PROMPT, ArrayCheckpoint
from tiny import TinyLlama
from webllm_widget.compile.arch.llama.config import LlamaConfig
from webllm_widget.compile.model_lib import build_model_library, export_model
from webllm_widget.compile.params import param_records
from webllm_widget.compile.quant.ggml import ggml_quantization
from webllm_widget.compile.quant.packing import dequantize, quantize_q4

pytestmark = pytest.mark.browser

#: Page JS that loads the library at `lib` on the page's WebGPU device: defines tvm, dev and vm.
VM_OPEN = """  const {tvmjs, gpuDevice} = await import('/static/tvmjs.js');
  const gpu = await gpuDevice();
  const wasm = await (await fetch(lib)).arrayBuffer();
  const tvm = await tvmjs.instantiate(wasm, tvmjs.createPolyfillWASI(), () => {});
  tvm.initWebGPU(gpu.device);
  const dev = tvm.webgpu();
  tvm.beginScope();
  const vm = tvm.detachFromCurrentScope(tvm.createVirtualMachine(dev));
  tvm.endScope();
  await tvm.asyncLoadWebGPUPipelines(vm.getInternalModule());
"""

RUN_JS = """async ({lib, blob, params, prompt, forced, hidden, chunk, ctx}) => {
""" + VM_OPEN + """  const bytes = new Uint8Array(await (await fetch(blob)).arrayBuffer());
  tvm.beginScope();
  const meta = JSON.parse(vm.getFunction('_metadata')().toString());
  const arrays = params.map(p => tvm.empty(p.shape, p.dtype, dev).copyFromRawBytes(bytes.subarray(p.offset, p.offset + p.nbytes)));
  const weights = tvm.detachFromCurrentScope(tvm.makeTVMArray(arrays));
  const f = (n) => tvm.detachFromCurrentScope(vm.getFunction(n));
  const [embed, prefill, decode] = [f('embed'), f('prefill'), f('decode')];
  const S = (v) => tvm.makeShapeTuple([v]);
  const kv = tvm.detachFromCurrentScope(f('create_tir_paged_kv_cache')(S(1), S(ctx), S(chunk), S(16), S(0)));
  const g = (n) => tvm.detachFromCurrentScope(tvm.getGlobalFunc(n));
  const [addSeq, begin, end] = [g('vm.builtin.kv_state_add_sequence'), g('vm.builtin.kv_state_begin_forward'),
                                g('vm.builtin.kv_state_end_forward')];
  addSeq(kv, new tvmjs.Scalar(0, 'int64'));
  tvm.endScope();
  const step = async (ids) => {
    tvm.beginScope();
    const input = tvm.empty([ids.length], 'int32', dev).copyFrom(ids);
    const e = embed(input, weights).view([1, ids.length, hidden]);
    begin(kv, tvm.makeShapeTuple([0]), tvm.makeShapeTuple([ids.length]));
    const out = (ids.length > 1 ? prefill : decode)(e, kv, weights);
    end(kv);
    const logits = tvm.detachFromCurrentScope(out.get(0));
    const host = tvm.detachFromCurrentScope(tvm.empty(logits.shape, 'float32', tvm.cpu()).copyFrom(logits));
    tvm.endScope();
    await dev.sync();
    const row = Array.from(host.toArray());
    return {row, logits};
  };
  const rows = [];
  let last;
  for (let i = 0; i < prompt.length; i += chunk) { last = await step(prompt.slice(i, i + chunk)); rows.push(last.row); }
  rows.splice(0, rows.length - 1);
  // one greedy sampling step on the GPU, web-llm's way
  tvm.beginScope();
  const vocab = last.logits.shape[2];
  const temp = tvm.empty([1], 'float32', dev).copyFrom(new Float32Array([1e-6]));
  const probs = f('softmax_with_temperature')(last.logits.view([1, 1, vocab]), temp).view([1, vocab]);
  const sorted = f('argsort_probs')(probs);
  const u = tvm.empty([1], 'float32', dev).copyFrom(new Float32Array([0.5]));
  const rowsIdx = tvm.empty([1], 'int32', dev).copyFrom(new Int32Array([0]));
  const topP = tvm.empty([1], 'float32', dev).copyFrom(new Float32Array([0.9]));
  const tok = f('sample_with_top_p')(sorted.get(0), sorted.get(1), u, rowsIdx, topP);
  const tokHost = tvm.detachFromCurrentScope(tvm.empty([1], 'int32', tvm.cpu()).copyFrom(tok));
  tvm.endScope();
  await dev.sync();
  const sampled = tokHost.toArray()[0];
  for (const t of forced) rows.push((await step([t])).row);
  return {rows, sampled, meta_params: meta.params.length, quantization: meta.quantization};
}"""


def run_in_browser(host_server, chromium, lib, records, metadata, cfg: LlamaConfig):
    blob, params, off = bytearray(), [], 0
    by_name = dict(records)
    for p in metadata["params"]:
        a = np.ascontiguousarray(by_name[p["name"]])
        assert list(a.shape) == p["shape"] and str(a.dtype) == p["dtype"]
        params.append({"name": p["name"], "shape": p["shape"], "dtype": p["dtype"], "offset": off, "nbytes": a.nbytes})
        blob += a.tobytes()
        off += a.nbytes
    lib_url = host_server.add_route(f"/c-model/{lib.sha256[:16]}.wasm", lib.wasm, "application/wasm")
    blob_url = host_server.add_route(f"/c-model/{lib.sha256[:16]}.bin", bytes(blob))
    page = chromium.new_page()
    try:
        page.goto(host_server.origin + "/blank.html")
        out = page.evaluate(RUN_JS, {"lib": lib_url, "blob": blob_url, "params": params, "prompt": PROMPT,
                                     "forced": FORCED, "hidden": cfg.hidden_size, "chunk": cfg.prefill_chunk_size,
                                     "ctx": cfg.context_window_size})
    finally:
        page.close()
    return np.array(out["rows"], dtype=np.float32), out


def _reference(weights, config):
    return LlamaReference(weights, config).forward(PROMPT + FORCED)[len(PROMPT) - 1:]


def test_q0f32_logits_on_webgpu_match_numpy_reference(host_server, chromium):
    tiny = TinyLlama.make(seed=0)
    cfg = LlamaConfig.from_dict(tiny.config, prefill_chunk_size=8)
    lib = build_model_library(cfg, "q0f32", progress=False)
    ex = export_model(cfg, "q0f32")
    got, out = run_in_browser(host_server, chromium, lib, param_records(ArrayCheckpoint(tiny.weights), cfg, "q0f32"),
                              ex.metadata, cfg)
    want = _reference(tiny.weights, tiny.config)
    err = float(np.abs(got - want).max())
    print(f"q0f32 webgpu max |logit error| = {err:.2e}")
    np.testing.assert_allclose(got, want, atol=1e-2, rtol=0)
    assert out["sampled"] == int(np.argmax(want[0]))  # greedy sample after the prompt
    assert out["quantization"] == "q0f32" and out["meta_params"] == len(ex.metadata["params"])


@pytest.mark.parametrize("schedule", ["auto", "fallback"])
def test_q4f32_1_logits_on_webgpu_match_dequantized_reference(host_server, chromium, schedule):
    tiny = TinyLlama.make(seed=0)
    cfg = LlamaConfig.from_dict(tiny.config, prefill_chunk_size=8)
    lib = build_model_library(cfg, "q4f32_1", schedule=schedule, progress=False)
    ex = export_model(cfg, "q4f32_1")
    got, out = run_in_browser(host_server, chromium, lib, param_records(ArrayCheckpoint(tiny.weights), cfg, "q4f32_1"),
                              ex.metadata, cfg)
    deq = {k: (dequantize("q4", quantize_q4(v)) if v.ndim == 2 else v) for k, v in tiny.weights.items()}
    want = _reference(deq, tiny.config)
    print(f"q4f32_1 webgpu: max |error| vs dequantized reference {np.abs(got - want).max():.2e}, "
          f"vs float32 weights {np.abs(got - _reference(tiny.weights, tiny.config)).max():.2f}")
    np.testing.assert_allclose(got, want, atol=1e-2, rtol=0)
    assert out["sampled"] == int(np.argmax(want[0]))


@pytest.mark.parametrize("schedule", ["auto", "fallback"])
def test_lossless_ggml_logits_on_webgpu_match_the_gguf_weights_exactly(host_server, chromium, tmp_path, schedule):
    from webllm_widget.compile.checkpoint import open_checkpoint

    tiny = TinyLlama.make(seed=0)
    ckpt = open_checkpoint(tiny.write_gguf(tmp_path / "tiny.gguf", matrix_type="Q4_1", embed_type="Q8_0"))
    cfg = LlamaConfig.from_dict(ckpt.config, prefill_chunk_size=8)
    quant = ggml_quantization(ckpt, cfg)
    assert dict(quant.formats)["model.embed_tokens"] == "q8_0"
    lib = build_model_library(cfg, quant, schedule=schedule, progress=False)
    ex = export_model(cfg, quant)
    got, out = run_in_browser(host_server, chromium, lib, param_records(ckpt, cfg, quant), ex.metadata, cfg)
    want = _reference(tiny.gguf_weights, tiny.config)
    print(f"ggml webgpu max |logit error| vs GGUF weights = {np.abs(got - want).max():.2e}")
    np.testing.assert_allclose(got, want, atol=1e-2, rtol=0)
    assert out["quantization"] == "ggml"
