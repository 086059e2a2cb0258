"""build_model_folder: a complete web-llm folder, cached by content, nothing half-written on failure."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tiny import TinyLlama, copy_gguf_with
from webllm_widget.compile.pipeline import build_model_folder
from webllm_widget.compile.tensor_cache import read_tensor
from webllm_widget.errors import BadArtifact, BadModel


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("WEBLLM_WIDGET_CACHE", str(root))
    return root


@pytest.fixture
def tiny_gguf(tmp_path):
    m = TinyLlama.make(seed=7)
    return m, m.write_gguf(tmp_path / "src" / "tiny.gguf")


def _leftovers(root: Path) -> list[str]:
    models = root / "models"
    return sorted(p.name for p in models.iterdir()) if models.exists() else []


def test_gguf_builds_a_web_llm_folder_with_lossless_weights(cache, tiny_gguf):
    m, src = tiny_gguf
    folder = build_model_folder(src, library=False, progress=False)
    assert folder.parent == cache / "models"
    names = {p.name for p in folder.iterdir()}
    assert {"tensor-cache.json", "params_shard_0.bin", "tokenizer.json", "mlc-chat-config.json",
            "manifest.json"} <= names
    chat = json.loads((folder / "mlc-chat-config.json").read_text())
    assert chat["quantization"] == "ggml"  # GGUF default: keep the file's blocks
    assert chat["vocab_size"] == m.config["vocab_size"]
    assert chat["context_window_size"] == m.config["max_position_embeddings"]
    assert chat["tokenizer_files"] == ["tokenizer.json"]
    assert chat["conv_template"]["system_message"] == "You are a tiny test model"
    assert chat["conv_template"]["stop_token_ids"] == [2, 0]
    assert chat["prefill_chunk_size"] > 0
    # the norms are stored as float32 exactly as in the file
    np.testing.assert_array_equal(read_tensor(folder, "model.norm.weight"), m.gguf_weights["model.norm.weight"])


def test_manifest_lists_every_file_with_its_sha256(cache, tiny_gguf):
    folder = build_model_folder(tiny_gguf[1], library=False, progress=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    files = {p.name for p in folder.iterdir() if p.name != "manifest.json"}
    assert set(manifest["files"]) == files
    for name, info in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert info == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def test_second_build_finds_the_folder_and_writes_nothing(cache, tiny_gguf):
    first = build_model_folder(tiny_gguf[1], library=False, progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    second = build_model_folder(tiny_gguf[1], library=False, progress=False)
    assert second == first
    assert {p.name: p.stat().st_mtime_ns for p in second.iterdir()} == stamps
    assert _leftovers(cache) == [first.name]


def test_a_cached_folder_missing_a_file_is_rebuilt(cache, tiny_gguf):
    folder = build_model_folder(tiny_gguf[1], library=False, progress=False)
    (folder / "tokenizer.json").unlink()
    again = build_model_folder(tiny_gguf[1], library=False, progress=False)
    assert again == folder and (folder / "tokenizer.json").exists()


def test_changed_source_or_quantization_gets_a_new_folder(cache, tiny_gguf, tmp_path):
    a = build_model_folder(tiny_gguf[1], library=False, progress=False)
    b = build_model_folder(tiny_gguf[1], quantization="q0f32", library=False, progress=False)
    other = TinyLlama.make(seed=8).write_gguf(tmp_path / "src2" / "tiny.gguf")
    c = build_model_folder(other, library=False, progress=False)
    assert len({a, b, c}) == 3
    assert json.loads((b / "mlc-chat-config.json").read_text())["quantization"] == "q0f32"


def test_hf_folder_defaults_to_q4f32_1(cache, tmp_path):
    folder = build_model_folder(TinyLlama.make().write_hf(tmp_path / "hf"), library=False, progress=False)
    chat = json.loads((folder / "mlc-chat-config.json").read_text())
    assert chat["quantization"] == "q4f32_1"
    doc = json.loads((folder / "tensor-cache.json").read_text())
    dtypes = {r["name"].rsplit(".", 1)[-1]: r["dtype"] for s in doc["records"] for r in s["records"]}
    assert dtypes["q_weight"] == "uint32" and dtypes["q_scale"] == "float32"


def test_lossless_mode_needs_a_gguf_input(cache, tmp_path):
    with pytest.raises(BadModel, match="ggml.*GGUF"):
        build_model_folder(TinyLlama.make().write_hf(tmp_path / "hf"), quantization="ggml", library=False,
                           progress=False)


def test_truncated_gguf_fails_clearly_and_leaves_nothing_in_the_cache(cache, tiny_gguf, tmp_path):
    data = tiny_gguf[1].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadModel) as e:
        build_model_folder(cut, library=False, progress=False)
    assert str(cut) in str(e.value)
    assert _leftovers(cache) == []


def test_failure_after_weights_were_written_leaves_nothing_half_written(cache, tiny_gguf, tmp_path):
    # weights convert fine, then the tokenizer step refuses the file: the half-built folder must vanish
    bad = copy_gguf_with(tiny_gguf[1], tmp_path / "spm.gguf", {"tokenizer.ggml.model": "llama"})
    with pytest.raises(BadModel, match="tokenizer model"):
        build_model_folder(bad, library=False, progress=False)
    assert _leftovers(cache) == []
    assert not any(p.name.startswith(".") for p in (cache / "models").iterdir())


def test_explicit_out_folder_is_used_and_reused(cache, tiny_gguf, tmp_path):
    out = tmp_path / "out" / "tiny-model"
    assert build_model_folder(tiny_gguf[1], out=out, library=False, progress=False) == out
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert build_model_folder(tiny_gguf[1], out=out, library=False, progress=False) == out
    assert (out / "manifest.json").stat().st_mtime_ns == stamp


def test_out_folder_holding_other_files_is_not_overwritten(cache, tiny_gguf, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(BadModel, match="not a model folder"):
        build_model_folder(tiny_gguf[1], out=out, library=False, progress=False)
    assert (out / "notes.txt").read_text() == "keep me"


def test_unknown_device_is_refused(cache, tiny_gguf):
    with pytest.raises(BadModel, match="device"):
        build_model_folder(tiny_gguf[1], device="tpu", library=False, progress=False)


# The library tests use the user's cache (the wasm runtime and compiled libraries live there and take
# minutes to build once) and write the model folder to a temp dir with `out=`.
@pytest.mark.slow
def test_tiny_gguf_builds_a_complete_folder_with_its_model_library(tiny_gguf, tmp_path):
    folder = build_model_folder(tiny_gguf[1], out=tmp_path / "tiny-model", progress=False)
    lib = folder / "model.wasm"
    assert lib.exists() and lib.read_bytes()[:4] == b"\0asm"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["library"] == "model.wasm" and "model.wasm" in manifest["files"]


@pytest.mark.slow
def test_cli_build_writes_the_folder_to_out(tiny_gguf, tmp_path, capsys):
    import argparse

    from webllm_widget.cli import cmd_build

    out = tmp_path / "cli-out"
    args = argparse.Namespace(gguf=str(tiny_gguf[1]), hf=None, default=False, quantization=None,
                              device="webgpu", out=str(out))
    assert cmd_build(args) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert (out / "model.wasm").exists() and (out / "mlc-chat-config.json").exists()


@pytest.mark.slow
def test_default_model_is_built_once_from_the_pypi_wheel():
    from webllm_widget import models

    folder = models.default(progress=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["quantization"] == "ggml"
    chat = json.loads((folder / "mlc-chat-config.json").read_text())
    assert chat["vocab_size"] == 49152 and chat["context_window_size"] == 8192
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert models.default(progress=False) == folder
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp


def test_tensor_cache_damage_in_a_built_folder_is_caught(cache, tiny_gguf):
    from webllm_widget.compile.tensor_cache import verify_tensor_cache

    folder = build_model_folder(tiny_gguf[1], library=False, progress=False)
    shard = folder / "params_shard_0.bin"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1
    os.chmod(shard, 0o644)
    shard.write_bytes(bytes(data))
    with pytest.raises(BadArtifact, match="params_shard_0.bin.*checksum"):
        verify_tensor_cache(folder)


@pytest.mark.parametrize("quantization", [None, "q4f32_1", "q0f32"])
def test_written_weights_are_exactly_the_params_the_model_library_declares(cache, tiny_gguf, quantization):
    # web-llm binds tensor-cache records to the library's _metadata params by name; shapes and dtypes must agree
    from webllm_widget.compile.arch.llama.config import LlamaConfig
    from webllm_widget.compile.model_lib import export_model
    from webllm_widget.compile.pipeline import _resolve_quantization
    from webllm_widget.compile.checkpoint import open_checkpoint

    folder = build_model_folder(tiny_gguf[1], quantization=quantization, library=False, progress=False)
    ckpt = open_checkpoint(tiny_gguf[1])
    cfg = LlamaConfig.from_dict(ckpt.config)
    declared = export_model(cfg, _resolve_quantization(ckpt, cfg, quantization), "webgpu").params
    doc = json.loads((folder / "tensor-cache.json").read_text())
    written = [{"name": r["name"], "shape": r["shape"], "dtype": r["dtype"]} for s in doc["records"] for r in s["records"]]
    assert written == [{"name": p["name"], "shape": list(p["shape"]), "dtype": p["dtype"]} for p in declared]


_SLOW_BUILD = """
import sys, time
from pathlib import Path
from webllm_widget.compile import pipeline

convert = pipeline._convert
def slow_convert(*a, **kw):
    Path(sys.argv[2]).write_text("building")  # the folder's lock is held from here on
    time.sleep(3)
    return convert(*a, **kw)
pipeline._convert = slow_convert
print(pipeline.build_model_folder(sys.argv[1], library=False, progress=False))
"""


def test_a_second_process_waits_for_the_build_in_flight_and_reads_its_folder(cache, tiny_gguf, tmp_path):
    """Two processes building the same folder (a test run and its background prebuild, two notebooks): the second
    waits for the first's lock and finds its folder, instead of building again and replacing it under the reader."""
    import subprocess
    import sys
    import time

    from webllm_widget import cache as cache_mod

    started = tmp_path / "started"
    other = subprocess.Popen([sys.executable, "-c", _SLOW_BUILD, str(tiny_gguf[1]), str(started)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    t0 = time.monotonic()
    while not started.exists():
        assert other.poll() is None, other.communicate()
        assert time.monotonic() - t0 < 120, "the other process did not start its build"
        time.sleep(0.05)
    waits = len(cache_mod.LOCK_WAITS)
    folder = build_model_folder(tiny_gguf[1], library=False, progress=False)
    out, err = other.communicate(timeout=120)
    assert other.returncode == 0, err
    assert Path(out.strip()) == folder  # the same folder: built once, by the other process
    (name, seconds), = cache_mod.LOCK_WAITS[waits:]
    assert name == f"model-{folder.name}" and seconds > 1.0
    assert json.loads((folder / "manifest.json").read_text())["build_seconds"] >= 3.0  # the other's build
    assert _leftovers(cache) == [folder.name]
