"""The model picker tells, before a model is picked, its download size, the memory it needs, whether it is cached in
this browser and whether this page's adapter can run it (and on what): real headless Chromium on SwiftShader, the
real built-in model's folders, the tiny model, and prebuilt ids whose host (Hugging Face) is answered by
Playwright's router from the tiny model's folder. Expected numbers are computed here from the folders on disk.
Once the prebuilt id is picked and loaded, the picker says it is cached, and the cache manager lists it (its
library from the other host with it) and deletes all of it.
"""
from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path

import pytest

from webllm_widget import Chat
from webllm_widget.models import prebuilt_ids

pytestmark = pytest.mark.browser

PREBUILT = "SmolLM2-360M-Instruct-q4f32_1-MLC"  # in the picker's list; f32 compute
F16_PREBUILT = "SmolLM2-360M-Instruct-q4f16_1-MLC"  # needs shader-f16, which SwiftShader lacks
LIB_HOST = "https://raw.githubusercontent.com/"  # where web-llm fetches prebuilt libraries
ALL_URLS = """async () => { const out = []; for (const n of await caches.keys()) {
    for (const r of await (await caches.open(n)).keys()) out.push(r.url); } return out; }"""


def _memory_mb(folder: Path) -> float:
    """Weights (every shard of tensor-cache.json) plus the KV cache at the context window, f32 (TVM's paged cache:
    pages of 16 tokens and one page more), in MiB."""
    tc = json.loads((folder / "tensor-cache.json").read_text())
    cfg = json.loads((folder / "mlc-chat-config.json").read_text())
    mc = cfg["model_config"]
    head_dim = mc.get("head_dim") or mc["hidden_size"] // mc["num_attention_heads"]
    elem = 2 if "f16" in cfg["quantization"] else 4
    pages = math.ceil(cfg["context_window_size"] / 16) + 1
    kv = mc["num_hidden_layers"] * pages * 16 * 2 * mc["num_key_value_heads"] * head_dim * elem
    return (sum(s["nbytes"] for s in tc["records"]) + kv) / 2 ** 20


def _files_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name != "manifest.json")


def _option(page, value: str) -> dict:
    return page.evaluate("""(v) => { const o = [...document.querySelectorAll('.wlw-chat .wlw-model option')]
        .find(o => o.value === v); return o ? {text: o.textContent, ...o.dataset, title: o.title,
        index: [...o.parentElement.children].indexOf(o)} : null; }""", value)


def test_picker_shows_size_memory_cached_and_fit_for_the_builtin_model_and_prebuilt_ids(widget_host, tiny_folder):
    from webllm_widget.models.devices import cpu_model_folder

    page = widget_host.page
    builtin_cpu = cpu_model_folder(None, progress=False)  # what device="auto" runs on a software adapter
    hub = f"https://huggingface.co/mlc-ai/{PREBUILT}/resolve/main/"
    served: list[str] = []

    def from_tiny(route, request) -> None:
        url = request.url
        served.append(url)
        name = url[len(hub):] if url.startswith(hub) else None
        f = tiny_folder / name if name else None
        if f is None or not f.is_file():
            route.fulfill(status=404, body=b"", headers={"access-control-allow-origin": "*"})
            return
        route.fulfill(status=200, body=f.read_bytes(), headers={"access-control-allow-origin": "*"})

    ctx = widget_host.browser.context
    ctx.route("https://huggingface.co/**", from_tiny)
    try:
        # nothing of the tiny model, the built-in one or a hub model is cached from earlier tests
        page.evaluate("""async () => { for (const n of await caches.keys()) if (n.startsWith('webllm/'))
            await caches.delete(n); }""")

        async def start():
            chat = Chat(model=str(tiny_folder), device="auto")
            f16 = Chat(model=F16_PREBUILT, autoload=False)
            await chat.ready(timeout=300)
            return chat, f16
        chat, f16 = widget_host.run(start())
        tiny_value = str(tiny_folder)
        # the tiny model: described at load (its folder), cached now that it is loaded, runs on WebGPU here
        page.wait_for_function("""(v) => { const o = [...document.querySelectorAll('.wlw-chat .wlw-model option')]
            .find(o => o.value === v); return o && o.dataset.cached === 'yes'; }""", arg=tiny_value, timeout=60_000)
        tiny = _option(page, tiny_value)
        assert int(tiny["size"]) == _files_bytes(tiny_folder)
        assert float(tiny["vramMb"]) == pytest.approx(_memory_mb(tiny_folder), abs=0.01)
        assert (tiny["fits"], tiny["device"]) == ("yes", "webgpu") and "runs here on WebGPU" in tiny["text"]

        # before the picker is opened: no request to the hub, the built-in model has no facts yet
        assert not served
        builtin = _option(page, "default")
        assert builtin["index"] == 0 and "size" not in builtin

        page.locator(".wlw-chat .wlw-model").first.focus()  # the user opens the picker
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # keeps Playwright's router turning while the kernel describes
            builtin, pre = _option(page, "default"), _option(page, PREBUILT)
            if "size" in builtin and "size" in pre:
                break
            page.wait_for_timeout(200)
        assert "size" in builtin, builtin
        assert builtin["index"] == 0  # the built-in model first
        assert int(builtin["size"]) == _files_bytes(builtin_cpu)
        assert float(builtin["vramMb"]) == pytest.approx(_memory_mb(builtin_cpu), abs=0.01)
        assert (builtin["cached"], builtin["fits"], builtin["device"]) == ("no", "yes", "cpu")
        assert "runs here on the CPU" in builtin["text"] and "not cached" in builtin["text"]

        # the prebuilt id: weights from its tensor list (served from the tiny folder), memory from web-llm's list
        tc = json.loads((tiny_folder / "tensor-cache.json").read_text())
        assert int(pre["size"]) == sum(s["nbytes"] for s in tc["records"])
        assert float(pre["vramMb"]) == pytest.approx(prebuilt_ids()[PREBUILT]["vram_MB"], abs=0.01)
        assert (pre["cached"], pre["fits"]) == ("no", "yes") and "weights" in pre["text"]
        assert {hub + "tensor-cache.json", hub + "mlc-chat-config.json"} <= set(served)
        assert not any("params_shard" in u for u in served)  # only the lists, no weights

        # an f16-compute prebuilt id on an adapter without shader-f16: won't run, and says why
        f16_entry = page.evaluate("""(v) => { const o = [...document.querySelectorAll('.wlw-chat .wlw-model')][1]
            .querySelector(`option[value="${v}"]`); return o && {text: o.textContent, ...o.dataset}; }""", F16_PREBUILT)
        assert f16_entry["fits"] == "no" and "needs shader-f16" in f16_entry["text"], f16_entry
        assert f16_entry["vramMb"] == f"{prebuilt_ids()[F16_PREBUILT]['vram_MB']:.2f}"

        # picked: the page fetches it from its hosts (here the tiny model's files); the picker then says cached, and
        # the cache manager lists it under its id, its library from the other host with it, and deletes all of it
        ctx.route(LIB_HOST + "**", lambda route, request: route.fulfill(
            status=200, body=(tiny_folder / "model.wasm").read_bytes(), headers={"access-control-allow-origin": "*"}))

        async def pick():
            return await chat.load(PREBUILT)
        fut = asyncio.run_coroutine_threadsafe(pick(), widget_host.server.loop)
        deadline = time.monotonic() + 300
        while not fut.done() and time.monotonic() < deadline:  # Playwright's router answers while the page loads
            page.wait_for_timeout(100)
        assert fut.result(timeout=1)["model"] == PREBUILT
        page.wait_for_function("""(v) => { const o = [...document.querySelectorAll('.wlw-chat .wlw-model option')]
            .find(o => o.value === v); return o && o.dataset.cached === 'yes'; }""", arg=PREBUILT, timeout=60_000)
        listed = [m for m in widget_host.run(chat.cache.list()) if m["kind"] == "prebuilt"]
        assert [(m["id"], m["url"]) for m in listed] == [(PREBUILT, hub)], listed
        assert (listed[0]["files"], listed[0]["bytes"]) == (len(list(tiny_folder.glob("*"))) - 1, _files_bytes(tiny_folder))
        assert [m["id"] for m in widget_host.run(chat.cache.delete(PREBUILT))] == [PREBUILT]
        assert not [u for u in page.evaluate(ALL_URLS) if "huggingface.co" in u or LIB_HOST in u]
        page.wait_for_function("""(v) => { const o = [...document.querySelectorAll('.wlw-chat .wlw-model option')]
            .find(o => o.value === v); return o && o.dataset.cached === 'no'; }""", arg=PREBUILT, timeout=60_000)
    finally:
        ctx.unroute("https://huggingface.co/**")
        ctx.unroute(LIB_HOST + "**")

