"""Helpers for CPU-path tests and benchmarks: serve a model library + tensor cache and drive ``cpu_model.js``.

    url = serve_cpu_model(host_server, "tiny", wasm_path, folder_with_tensor_cache)
    logits = teacher_forced(page, url, prompt=[...], forced=[...])   # np.ndarray (1 + len(forced), vocab)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from browser import run_js

TEACHER_FORCED_JS = """
const { CpuModel } = await import('/static/cpu_model.js');
const wasm = await (await fetch(arg.base + 'model.wasm')).arrayBuffer();
const model = await CpuModel.create(wasm, { tensorCacheUrl: arg.base, cacheScope: 'webllm-widget-test-' + arg.tag });
const rows = [];
const t0 = performance.now();
rows.push(Array.from(model.forward(arg.prompt)));
const t1 = performance.now();
for (const t of arg.forced) rows.push(Array.from(model.forward([t])));
const t2 = performance.now();
let adapter = null;
if (navigator.gpu) adapter = await Promise.race([navigator.gpu.requestAdapter(), new Promise(r => setTimeout(() => r(null), 5000))]);
const noWebgpu = !adapter;
model.dispose();
return { rows, prefill_ms: t1 - t0, decode_ms: t2 - t1, no_webgpu: noWebgpu };
"""


def serve_cpu_model(server: Any, tag: str, wasm: Path, folder: Path) -> str:
    """Serve ``wasm`` as ``model.wasm`` and every file of ``folder`` under ``/cpu/<tag>/``; return that URL."""
    base = f"/cpu/{tag}/"
    server.add_route(base + "model.wasm", Path(wasm), "application/wasm")
    for f in Path(folder).iterdir():
        if f.is_file() and f.name != "model.wasm":
            server.add_route(base + f.name, f, "application/json" if f.suffix == ".json" else "application/octet-stream")
    return server.origin + base


def teacher_forced(page: Any, base: str, prompt: list[int], forced: list[int], tag: str = "t") -> dict:
    """Run the CPU model in ``page``: prefill ``prompt``, then decode each of ``forced``; logits as numpy."""
    out = run_js(page, TEACHER_FORCED_JS, {"base": base, "prompt": prompt, "forced": forced, "tag": tag})
    out["logits"] = np.array(out.pop("rows"), dtype=np.float32)
    return out


def tiny_ggml_cpu_library(folder: Path, isa: str):
    """The tiny random Llama (seed 1) as a GGUF (Q4_1 matrices, Q8_0 embedding) under ``folder``, and its page-CPU
    library for ``isa`` in the lossless ``ggml`` mode, prefill chunks of 8 (cached by content: the background
    prebuild, tests/helpers/prebuild.py, builds the same one). Returns (tiny, checkpoint, config, quantization,
    library path)."""
    from tiny import TinyLlama
    from webllm_widget.compile.arch.llama.config import LlamaConfig
    from webllm_widget.compile.checkpoint import open_checkpoint
    from webllm_widget.compile.cpu import build_cpu_library
    from webllm_widget.compile.quant.ggml import ggml_quantization

    tiny = TinyLlama.make(seed=1)
    ckpt = open_checkpoint(tiny.write_gguf(Path(folder) / "t.gguf"))
    cfg = LlamaConfig.from_dict(ckpt.config, prefill_chunk_size=8)
    quant = ggml_quantization(ckpt, cfg, device="cpu")
    return tiny, ckpt, cfg, quant, build_cpu_library(cfg, quant, isa=isa, progress=False)


def tiny_cpu_folder(folder: Path) -> Path:
    """The tiny random Llama (seed 1) as a GGUF under ``folder``, built as a page-CPU model folder (both CPU builds;
    cached by content: the background prebuild, tests/helpers/prebuild.py, builds the same)."""
    from tiny import TinyLlama
    from webllm_widget.compile.pipeline import build_model_folder

    gguf = TinyLlama.make(seed=1).write_gguf(Path(folder) / "tiny.gguf")
    return build_model_folder(gguf, device="cpu", progress=False)  # library cached: one link per machine
