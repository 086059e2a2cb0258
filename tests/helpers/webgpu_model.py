"""Run a compiled model library in headless Chromium's WebGPU the way web-llm drives it.

``RUN_JS`` loads the library with tvmjs (instantiate, initWebGPU, the engine's batched dispatch, VM, pipelines),
uploads the parameters,
creates the paged KV cache and prefills/decodes the teacher-forced ``PROMPT``/``FORCED`` ids, then takes one
greedy sampling step on the GPU; ``run_in_browser`` serves the library and weights and returns the logits.
"""
from __future__ import annotations

import numpy as np

from llama_native import FORCED, PROMPT
from webllm_widget.compile.arch.llama.config import LlamaConfig

#: Page JS that loads the library at `lib` on the page's WebGPU device: defines tvm, dev and vm.
VM_OPEN = """  const {tvmjs, gpuDevice, batchDispatch} = await import('/static/tvmjs.js');
  const gpu = await gpuDevice();
  const wasm = await (await fetch(lib)).arrayBuffer();
  const tvm = await tvmjs.instantiate(wasm, tvmjs.createPolyfillWASI(), () => {});
  tvm.initWebGPU(gpu.device);
  const dispatchStats = batchDispatch(tvm.lib.webGPUContext);  // the engine's dispatch (engine/dispatch.ts)
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
  const byName = Object.fromEntries(params.map(p => [p.name, p]));  // in the order the library takes them
  const arrays = meta.params.map(m => byName[m.name]).map(p => tvm.empty(p.shape, p.dtype, dev).copyFromRawBytes(bytes.subarray(p.offset, p.offset + p.nbytes)));
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
  const decodeLaunches = [];  // kernel launches of each decode step (embed + decode), as the engine's dispatch counts them
  for (const t of forced) {
    const before = dispatchStats.launches;
    rows.push((await step([t])).row);
    decodeLaunches.push(dispatchStats.launches - before);
  }
  return {rows, sampled, meta_params: meta.params.length, quantization: meta.quantization, dispatch: {...dispatchStats},
          decode_launches: decodeLaunches};
}"""


def run_in_browser(host_server, chromium, lib, records, metadata, cfg: LlamaConfig, page=None, prompt=None,
                   forced=None):
    """Teacher-forced logits of ``lib`` with ``records`` on the page's WebGPU (a fresh page unless ``page``); the
    ids are ``PROMPT`` and ``FORCED`` unless given."""
    blob, params, off = bytearray(), [], 0
    by_name = dict(records)
    for p in metadata["params"]:
        a = np.ascontiguousarray(by_name[p["name"]])
        assert list(a.shape) == p["shape"] and str(a.dtype) == p["dtype"]
        params.append({"name": p["name"], "shape": p["shape"], "dtype": p["dtype"], "offset": off, "nbytes": a.nbytes})
        blob += a.tobytes()
        off += a.nbytes
    return _run(host_server, chromium, lib.wasm, lib.sha256, bytes(blob), params, cfg, page, prompt, forced)


def run_folder_in_browser(host_server, page, folder, cfg) -> tuple[np.ndarray, dict]:
    """Teacher-forced logits of a model folder built for WebGPU (``model.wasm`` + its tensor cache) in ``page``."""
    import hashlib
    import json
    from pathlib import Path

    folder = Path(folder)
    doc = json.loads((folder / "tensor-cache.json").read_text())
    blob, params = bytearray(), []
    for shard in doc["records"]:
        data = (folder / shard["dataPath"]).read_bytes()
        for r in shard["records"]:
            params.append({"name": r["name"], "shape": r["shape"], "dtype": r["dtype"], "offset": len(blob),
                           "nbytes": r["nbytes"]})
            blob += data[r["byteOffset"]:r["byteOffset"] + r["nbytes"]]
    wasm = (folder / "model.wasm").read_bytes()
    return _run(host_server, None, wasm, hashlib.sha256(wasm + bytes(blob)).hexdigest(), bytes(blob), params, cfg,
                page)


def _run(host_server, chromium, wasm: bytes, tag: str, blob: bytes, params: list, cfg, page, prompt=None,
         forced=None):
    lib_url = host_server.add_route(f"/c-model/{tag[:16]}.wasm", wasm, "application/wasm")
    blob_url = host_server.add_route(f"/c-model/{tag[:16]}.bin", blob)
    own = page is None
    if own:
        page = chromium.new_page()
    try:
        if own:
            page.goto(host_server.origin + "/blank.html")
        out = page.evaluate(RUN_JS, {"lib": lib_url, "blob": blob_url, "params": params, "prompt": prompt or PROMPT,
                                     "forced": forced or FORCED, "hidden": cfg.hidden_size, "chunk": cfg.prefill_chunk_size,
                                     "ctx": cfg.context_window_size})
    finally:
        if own:
            page.close()
    return np.array(out["rows"], dtype=np.float32), out


#: test_model_webgpu's cases of the tiny Llama (seed 0): quantization and the model's shape
TINY_LIBRARIES = {
    "q0f32": ("q0f32", {}, 8),
    "q0f32-long": ("q0f32", {"context": 512}, 64),  # a 300-token context for the hardware decode attention
    "q4f32_1": ("q4f32_1", {"head_dim": 32}, 8),  # head_dim 32: later prompt chunks go through the merge kernel
    "ggml": ("ggml", {}, 8),  # from a GGUF with Q4_1 matrices and a Q8_0 embedding
}


def tiny_library(case: str, schedule: str = "auto", folder=None):
    """The tiny Llama (seed 0) of ``case`` (:data:`TINY_LIBRARIES`) and its WebGPU library for ``schedule``, cached
    by content (the background prebuild, tests/helpers/prebuild.py, builds the same). The ``ggml`` case writes its
    GGUF under ``folder``. Returns (tiny, checkpoint or None, config, quantization, library)."""
    from pathlib import Path

    from tiny import TinyLlama
    from webllm_widget.compile.model_lib import build_model_library

    quant, shape, chunk = TINY_LIBRARIES[case]
    tiny = TinyLlama.make(seed=0, **shape)
    ckpt = None
    if quant == "ggml":
        from webllm_widget.compile.checkpoint import open_checkpoint
        from webllm_widget.compile.quant.ggml import ggml_quantization

        ckpt = open_checkpoint(tiny.write_gguf(Path(folder) / "tiny.gguf", matrix_type="Q4_1", embed_type="Q8_0"))
        cfg = LlamaConfig.from_dict(ckpt.config, prefill_chunk_size=chunk)
        quant = ggml_quantization(ckpt, cfg)
    else:
        cfg = LlamaConfig.from_dict(tiny.config, prefill_chunk_size=chunk)
    return tiny, ckpt, cfg, quant, build_model_library(cfg, quant, schedule=schedule, progress=False)
