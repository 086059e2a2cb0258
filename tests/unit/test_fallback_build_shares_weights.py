"""The schedule="fallback" WebGPU build of a model shares the default build's weights instead of converting again.

Only the model library differs between the two schedules: the fallback folder hard-links the default folder's
shards, tensor cache, tokenizer and config (one copy on disk, ~120 MB less for the built-in model) and builds
its own library. Real compiler (TVM + emcc), the tiny random-weight Llama; no browser.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from webllm_widget.cache import sha256_file
from webllm_widget.compile.pipeline import MANIFEST, build_model_folder


def test_the_fallback_build_links_the_default_builds_weights_and_builds_only_its_library(tmp_path, monkeypatch):
    from tiny import TinyLlama

    from webllm_widget.cache import cache_dir

    # Folders are built in an empty cache; the compiled libraries and the TVM runtime (content-keyed, slow to
    # build) come from the user's cache when it has them.
    shared_cache = cache_dir()
    (tmp_path / "cache").mkdir()
    for sub in ("model-libs", "runtime"):
        (shared_cache / sub).mkdir(parents=True, exist_ok=True)
        (tmp_path / "cache" / sub).symlink_to(shared_cache / sub)
    monkeypatch.setenv("WEBLLM_WIDGET_CACHE", str(tmp_path / "cache"))
    hf = TinyLlama.make(seed=0).write_hf(tmp_path / "tiny-hf")
    auto = build_model_folder(hf, quantization="q4f32_1", progress=False)
    fallback = build_model_folder(hf, quantization="q4f32_1", progress=False, schedule="fallback")
    assert auto != fallback

    a = json.loads((auto / MANIFEST).read_text())
    f = json.loads((fallback / MANIFEST).read_text())
    assert f["schedule"] == "fallback" and a["schedule"] == "auto" and f["key"] != a["key"]
    assert set(a["files"]) == set(f["files"])
    shared = [n for n in a["files"] if n != "model.wasm"]
    assert any(n.startswith("params_shard_") for n in shared) and "tokenizer.json" in shared
    for name in shared:
        assert os.path.samefile(auto / name, fallback / name), name  # one file on disk, not a second conversion
        assert f["files"][name] == a["files"][name]
    # its own library, recorded with its own hash
    assert f["files"]["model.wasm"]["sha256"] != a["files"]["model.wasm"]["sha256"]
    assert sha256_file(fallback / "model.wasm") == f["files"]["model.wasm"]["sha256"]
    assert not os.path.samefile(auto / "model.wasm", fallback / "model.wasm")
    # a second call finds the folder
    assert build_model_folder(hf, quantization="q4f32_1", progress=False, schedule="fallback") == fallback
    assert Path(fallback, "params_shard_0.bin").stat().st_nlink >= 2
