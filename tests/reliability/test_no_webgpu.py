"""No WebGPU: Chromium started without --enable-unsafe-webgpu (B's ``chromium_no_webgpu`` fixture).

An explicit WebGPU model must fail with ``no-webgpu`` before any model byte is copied, show the user how
to turn WebGPU on in the browser they use, and leave the widget responsive.
"""
from __future__ import annotations

import pytest

from webllm_widget import Chat
from webllm_widget.widgets.chat import _STATIC as STATIC
from webllm_widget.errors import WebGPUUnavailable

pytestmark = pytest.mark.browser


def _webgpu_kwargs() -> dict:
    # F adds device="auto"|"webgpu"|"cpu"; the no-webgpu error is the contract of an explicit "webgpu".
    return {"device": "webgpu"} if "device" in Chat.class_trait_names() else {}


def test_without_webgpu_ask_raises_webgpu_unavailable_and_the_widget_says_how_to_enable_it(
        widget_host_no_webgpu, tiny_folder, rel):
    host = widget_host_no_webgpu

    async def go():
        chat = Chat(model=str(tiny_folder), **_webgpu_kwargs())
        with pytest.raises(WebGPUUnavailable) as load_err:
            await chat.ready(timeout=120)
        with pytest.raises(WebGPUUnavailable) as ask_err:
            await chat.ask("hello")
        # a second load fails the same clean way (no hang, no other code) and reset still answers
        again = chat.load()
        with pytest.raises(WebGPUUnavailable):
            await again
        return chat, load_err.value, ask_err.value

    chat, load_err, ask_err = host.run(go(), timeout=300)
    assert load_err.code == ask_err.code == "no-webgpu"
    assert chat.status == "error" and chat.error["code"] == "no-webgpu"
    # no model file was copied: at most the engine bundle went to the page (it probes the adapter), and not even
    # that when an earlier Chat in this browser (the CPU-path tests share it) left the bundle in its cache
    assert chat.bytes_sent in (0, (STATIC / "engine_worker.js").stat().st_size), chat.bytes_sent
    shown = host.page.evaluate(
        f"() => document.querySelector('#widget-{chat.comm.comm_id} .wlw-error').textContent")
    assert shown.startswith("[no-webgpu]")
    # Chromium's user agent: the hint names the flag page and the command-line switch
    assert "chrome://flags/#enable-unsafe-webgpu" in shown and "--enable-unsafe-webgpu" in shown
    assert host.page_errors() == []
    # the widget still answers requests (reset clears the conversation and the shown error)
    async def reset():
        return await chat._ch.request("call", {"fn": "reset"}, timeout=60)
    host.run(reset())

    # the next normal request, in a browser that has WebGPU, works from the same Python process
    ok = rel.chat(tiny_folder, temperature=0, max_tokens=3)
    text = rel.run(ok.ask("hello"))
    assert ok.status == "ready" and ok.messages[-1] == {"role": "assistant", "content": text}
