"""A model built from source carries two WebGPU libraries; the page picks the one that suits its adapter.

On SwiftShader (a software adapter) Chat(device="webgpu") of the tiny Llama's HF folder must load the library
built with the "fallback" kernel schedule, send only that library's bytes, and answer with the same greedy
tokens as the default ("auto") library, which a model folder given directly keeps.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from webllm_widget import Chat
from webllm_widget.models.devices import model_spec


pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def tiny_hf_folder() -> Path:
    from tiny import TinyLlama

    from webllm_widget.cache import cache_dir

    return TinyLlama.make(seed=0).write_hf(cache_dir() / "test-sources" / "tiny-llama-seed0")


def _lib_sha(spec: dict) -> str:
    return next(f["sha256"] for f in spec["files"] if f["name"] == spec["lib"])


async def _load_and_answer(model: Path):
    """A WebGPU Chat of ``model``: the Chat, its load report and a greedy completion of "hello"."""
    chat = Chat(model=str(model), device="webgpu", temperature=0, max_tokens=8)
    report = await chat.ready(timeout=300)
    return chat, report, await chat.complete([{"role": "user", "content": "hello"}])


def test_software_adapter_gets_the_fallback_library_and_only_its_bytes(widget_host, tiny_hf_folder):
    spec, _ = model_spec(str(tiny_hf_folder), "webgpu", progress=False)
    fb = spec["webgpu_fallback"]
    assert spec["schedule"] == "auto" and fb["schedule"] == "fallback"
    auto_lib, fb_lib = _lib_sha(spec), _lib_sha(fb)
    assert auto_lib != fb_lib
    # same weights: every file but the library is the same bytes in both builds
    assert {f["sha256"] for f in spec["files"]} - {auto_lib} == {f["sha256"] for f in fb["files"]} - {fb_lib}

    chat, report, r = widget_host.run(_load_and_answer(tiny_hf_folder))
    assert report["gpu"]["architecture"] == "swiftshader" and report["gpu"]["is_fallback"]
    assert report["schedule"] == "fallback" and chat.backend["schedule"] == "fallback"
    # the engine's batched kernel dispatch ran it (tvmjs's own would say "upstream: why")
    assert report["dispatch"] == "batched" and chat.backend["dispatch"] == "batched"
    assert "software adapters" in chat.gpu
    sent = chat._blobs.blobs_sent
    assert fb_lib in sent and auto_lib not in sent
    fb_sizes = {f["sha256"]: f["size"] for f in fb["files"]}
    model_bytes = sum(fb_sizes[s] for s in sent if s in fb_sizes)
    assert report["bytes_installed"] == model_bytes > 0
    assert r["usage"]["completion_tokens"] >= 1

    # the same folder's default library, loaded directly (a built folder keeps its own library)
    auto_folder = Path(_folder_of(spec))

    chat2, report2, r2 = widget_host.run(_load_and_answer(auto_folder))
    # which library ran is what the page reports; its bytes may already be in this browser's cache (earlier
    # tests load the same folder), so blobs_sent can be empty here
    assert report2["schedule"] == "auto" and chat2.backend["schedule"] == "auto"
    assert r2["choices"][0]["message"]["content"] == r["choices"][0]["message"]["content"]


def _folder_of(spec: dict) -> str:
    from webllm_widget.cache import cache_dir

    return str(cache_dir() / "models" / spec["id"])
