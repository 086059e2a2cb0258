"""A model from MLC's prebuilt list, picked by id, is fetched by the page itself (online use).

This machine has no internet, so the browser's requests to the prebuilt hosts (huggingface.co for the
model folder, raw.githubusercontent.com for the library) are answered by Playwright's router from a local
folder built from the tiny model. What is shown: the kernel sends only the id, the page's engine resolves
it through web-llm's own prebuilt list to those URLs, fetches every file from there, and answers.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

MODEL_ID = "SmolLM2-135M-Instruct-q0f32-MLC"  # f32 compute: loads on an adapter without shader-f16
HF_BASE = f"https://huggingface.co/mlc-ai/{MODEL_ID}/resolve/main/"
LIB_HOST = "https://raw.githubusercontent.com/mlc-ai/binary-mlc-llm-libs/"


def _run_pumping(rel, coro, timeout: float) -> Any:
    """``rel.run`` that keeps Playwright's sync API turning, so route handlers run while the page loads."""
    fut = asyncio.run_coroutine_threadsafe(coro, rel.server.loop)
    end = time.monotonic() + timeout
    while not fut.done():
        if time.monotonic() > end:
            fut.cancel()
            raise TimeoutError(f"not done in {timeout} s")
        rel.page.wait_for_timeout(50)
    return fut.result()


_HUB = ("https://huggingface.co/**", "https://raw.githubusercontent.com/**")


@contextlib.contextmanager
def _hub_served_by(rel, handler):
    """Route the model hub and the prebuilt-library host of the test browser to ``handler`` while inside."""
    ctx = rel.chromium.context
    for pattern in _HUB:
        ctx.route(pattern, handler)
    try:
        yield
    finally:
        for pattern in _HUB:
            ctx.unroute(pattern)


def _forget_hub_files(rel) -> None:
    """Drop what an earlier test cached from the hub in this browser's Cache Storage."""
    rel.page.evaluate("""async () => { for (const name of await caches.keys()) { const c = await caches.open(name);
        for (const r of await c.keys()) if (/huggingface\\.co|githubusercontent/.test(r.url)) await c.delete(r); } }""")


def test_a_prebuilt_id_is_fetched_by_the_page_from_the_prebuilt_hosts(rel, tiny_folder):
    served: list[str] = []

    def from_folder(route, request) -> None:
        url = request.url
        if url.startswith(HF_BASE):
            f = Path(tiny_folder) / url[len(HF_BASE):].split("?")[0]
        elif url.startswith(LIB_HOST) and url.endswith(".wasm"):
            f = Path(tiny_folder) / "model.wasm"
        else:
            f = None
        served.append(url)
        if f is None or not f.is_file():
            route.fulfill(status=404, body=b"", headers={"access-control-allow-origin": "*"})
            return
        route.fulfill(status=200, body=f.read_bytes(),
                      headers={"access-control-allow-origin": "*", "content-type": "application/octet-stream"})

    with _hub_served_by(rel, from_folder):
        chat = rel.chat(tiny_folder, temperature=0, max_tokens=3)
        _forget_hub_files(rel)  # nothing from an earlier run in this browser's Cache Storage: the page must fetch
        sent = chat.bytes_sent

        async def go():
            r = await chat.load(MODEL_ID)
            return r, await chat.ask("hello")
        result, text = _run_pumping(rel, go(), timeout=300)

    assert chat.bytes_sent == sent  # the kernel sent the id only, no model byte
    assert result["model"] == MODEL_ID and chat.status == "ready" and chat.error == {}
    assert chat.messages[-1] == {"role": "assistant", "content": text}
    fetched = {u[len(HF_BASE):] for u in served if u.startswith(HF_BASE)}
    shards = {p.name for p in Path(tiny_folder).glob("params_shard_*.bin")}
    assert {"mlc-chat-config.json", "tokenizer.json"} <= fetched and shards <= fetched
    assert "tensor-cache.json" in fetched or "ndarray-cache.json" in fetched
    libs = [u for u in served if u.startswith(LIB_HOST)]
    assert len(libs) == 1 and libs[0].endswith("/SmolLM2-135M-Instruct-q0f32_cs1k-webgpu.wasm"), libs


def test_a_prebuilt_id_whose_kv_cache_cannot_be_one_gpu_buffer_is_refused_before_its_weights_are_fetched(
        rel, tiny_folder, tmp_path):
    # The config served for the prebuilt id claims 1024 KV heads of 64 dims: with web-llm's override for this id
    # (context_window_size 4096) that is 2 GiB a layer, beyond SwiftShader's 1 GiB buffers. The page must check
    # the config web-llm will use (overrides on top) and stop before the library or any shard is fetched.
    cfg = json.loads((Path(tiny_folder) / "mlc-chat-config.json").read_text())
    cfg["model_config"].update(num_key_value_heads=1024, head_dim=64)
    cfg["context_window_size"] = 256
    body = json.dumps(cfg).encode()
    served: list[str] = []

    def from_config(route, request) -> None:
        served.append(request.url)
        if request.url.split("?")[0] == HF_BASE + "mlc-chat-config.json":
            route.fulfill(status=200, body=body, headers={"access-control-allow-origin": "*",
                                                          "content-type": "application/json"})
        else:
            route.fulfill(status=404, body=b"", headers={"access-control-allow-origin": "*"})

    with _hub_served_by(rel, from_config):
        rel.drop_engine()  # an earlier test loaded MODEL_ID in this page: a page holding it would not load it again
        chat = rel.chat(tiny_folder, temperature=0, max_tokens=3)
        _forget_hub_files(rel)

        async def go():
            from webllm_widget.errors import WebLLMWidgetError
            try:
                await chat.load(MODEL_ID)
            except WebLLMWidgetError as e:
                return e
            return None
        err = _run_pumping(rel, go(), timeout=120)
    from webllm_widget.errors import OutOfGPUMemory

    assert isinstance(err, OutOfGPUMemory) and err.code == "out-of-memory", err
    assert err.detail["context_window_size"] == 4096  # web-llm's override for this id, not the file's 256
    assert err.detail["needed_bytes"] > err.detail["max_buffer_size"]
    assert served == [HF_BASE + "mlc-chat-config.json"]  # nothing else: no library, no shard
    # and the refused config is not left in the page's cache (a corrected copy would be read next time)
    assert not rel.page.evaluate("async () => !!(await (await caches.open('webllm/config')).match("
                                 f"{json.dumps(HF_BASE + 'mlc-chat-config.json')}))")
