"""Colab's conditions, reproduced in a host page (``helpers/frame_host.py``; no Google code, no real Colab):
each output in its own iframe on its own loopback origin, the widget manager inside it, comm messages relayed
by postMessage, no Jupyter server route, and a later cell's messages reaching only the newest output. A later
view of the chat, and a second chat with the same model, take the model files from the earlier output frame
(js/src/siblings.ts), not from the comm.

And VS Code's condition that matters most: no WebGPU in the output frame (Chromium started without it), where
``device="auto"`` runs on the page's CPU and the widget says why.
"""
from __future__ import annotations

import json
import time

import IPython.display
import pytest

from frame_host import FrameHost
from webllm_widget import Chat
from webllm_widget.errors import ViewUnreachable

pytestmark = [pytest.mark.browser, pytest.mark.hosts]


def _model_bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name != "manifest.json")


def chat_folder(chat):
    """The model folder a chat's page loaded (its CPU build here)."""
    from webllm_widget.models.devices import cpu_model_folder

    return cpu_model_folder(chat.model, progress=False)


def test_chat_in_an_output_frame_and_a_later_cell_that_only_the_newest_output_hears(host_server, chromium,
                                                                                   tiny_folder):
    with FrameHost(host_server, chromium) as host:
        host.new_cell()  # cell 1 shows the chat and asks in the same cell

        # the page's CPU engine: quick to load; what this test is about is the frames and the comm around it
        source = json.loads((tiny_folder / "manifest.json").read_text())["source_path"]  # the tiny HF folder

        async def cell1():
            chat = Chat(model=source, device="cpu", temperature=0, max_tokens=4)
            await chat.ready(timeout=300)
            return chat, await chat.ask("hello")

        chat, first = host.run(cell1(), timeout=400)
        out1 = host.frame(1)
        assert out1.evaluate("() => location.origin") == f"http://out-1.localhost:{host_server.port}"
        assert out1.evaluate("() => window.isSecureContext") is True
        # WebGPU is there inside the cross-origin output frame too
        assert out1.evaluate("async () => !!(navigator.gpu && await navigator.gpu.requestAdapter())") is True
        assert out1.locator(".wlw-chat").count() == 1 and host.page.locator(".wlw-chat").count() == 0
        # no server route in an output frame: every model file came over the relayed comm
        folder = chat_folder(chat)
        assert chat.bytes_sent >= _model_bytes(folder), chat.bytes_sent
        assert chat.messages[-1] == {"role": "assistant", "content": first}

        # cell 2 asks the chat shown by cell 1: the host hands the message to cell 2's output only
        host.new_cell()
        host.page.wait_for_function("() => window.__host.frames === 2")
        host.frame(2)  # the new output exists (empty)

        async def cell2():
            t0 = time.monotonic()
            try:
                await chat.ask("again")
            except ViewUnreachable as e:
                return e, time.monotonic() - t0
            return None, time.monotonic() - t0

        err, waited = host.run(cell2(), timeout=120)
        assert err is not None and err.code == "view-unreachable", err
        assert "await chat.show()" in str(err), str(err)
        assert waited < 30, waited  # at once (the receipt timeout), not after the answer's hour
        assert host.frame_state(2)["dropped"] >= 1  # the ask went to cell 2's output, which has no such view
        assert chat.status == "ready" and chat.messages[-1] == {"role": "assistant", "content": first}

        # doing what the error says: show the chat again in this cell (this host's display), then ask there
        sent_before = chat.bytes_sent
        async def cell2_again():
            saved = IPython.display.display
            IPython.display.display = host.display
            try:
                report = await chat.show(timeout=300)
            finally:
                IPython.display.display = saved
            return report, await chat.ask("again")

        report, again = host.run(cell2_again(), timeout=400)
        assert report.get("model"), report
        assert host.frame(2).locator(".wlw-chat").count() == 1
        assert chat.messages[-2:] == [{"role": "user", "content": "again"}, {"role": "assistant", "content": again}]
        # cell 2's frame has its own Cache Storage (another origin), yet nothing came over the comm again: the new
        # frame took every file from cell 1's frame (verified by sha256 there)
        assert chat.bytes_sent == sent_before, (chat.bytes_sent, sent_before)
        assert host.frame(2).evaluate("() => globalThis.__webllmWidgetBlobs.stats.siblings") >= _model_bytes(folder)

        # cell 3: a second Chat with the same model gets it from the other frames too
        host.new_cell()

        async def cell3():
            second = Chat(model=source, device="cpu", temperature=0, max_tokens=4)
            await second.ready(timeout=300)
            return second, await second.ask("hello")

        second, third = host.run(cell3(), timeout=400)
        assert third == first  # the same model, greedy, the same question: the same answer
        assert second.bytes_sent == 0, second.bytes_sent
        assert host.page_errors() == []


def test_without_webgpu_in_the_output_frame_auto_runs_on_the_cpu_and_says_why(host_server, chromium_no_webgpu,
                                                                              tiny_folder):
    source = json.loads((tiny_folder / "manifest.json").read_text())["source_path"]  # the tiny HF folder
    with FrameHost(host_server, chromium_no_webgpu) as host:
        host.new_cell()

        async def cell():
            chat = Chat(model=source, device="auto", temperature=0, max_tokens=4)
            await chat.ready(timeout=600)
            return chat, await chat.ask("hello")

        chat, text = host.run(cell(), timeout=900)
        out = host.frame(1)
        assert out.evaluate("async () => !!(navigator.gpu && await navigator.gpu.requestAdapter())") is False
        assert chat.backend["device"] == "cpu", chat.backend
        assert "WebGPU" in chat.backend["reason"] or "adapter" in chat.backend["reason"], chat.backend
        shown = out.locator(".wlw-gpu-name").inner_text()
        assert shown.startswith("CPU (WebAssembly") and chat.backend["reason"] in shown, shown
        assert chat.messages[-1] == {"role": "assistant", "content": text} and text
        assert host.page_errors() == []
