"""Chat in a real marimo notebook (``marimo run`` on loopback, headless Chromium with WebGPU).

notebooks/chat_marimo.py is run as a user would open it: the chat loads the tiny model over marimo's comm (no
Jupyter server, so no HTTP route), a cell asks with ``chat.send`` and the streamed pieces reach Python after
the cell ends, ``await chat.ask`` inside a cell is refused at once with HostHoldsMessages, a message typed in
the page reaches ``chat.messages``, and a button whose handler calls ``chat.stop()`` ends a long answer. The
notebook's last cell reads ``mo.ui.anywidget(chat).value``, so marimo runs it again after each answer; each
run writes what Python saw (``state-<answers>.json``).
"""
from __future__ import annotations

import time

import pytest

from browser import ROOT
from marimo_host import MarimoServer

pytestmark = [pytest.mark.browser, pytest.mark.hosts]

NOTEBOOK = ROOT / "notebooks" / "chat_marimo.py"


def test_chat_in_marimo_loads_asks_from_a_cell_streams_takes_typed_messages_and_stops(chromium, tiny_folder,
                                                                                      tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    model_bytes = sum(p.stat().st_size for p in tiny_folder.iterdir() if p.is_file() and p.name != "manifest.json")
    with MarimoServer(NOTEBOOK, env={"WEBLLM_WIDGET_MODEL": str(tiny_folder),
                                     "WEBLLM_WIDGET_RESULTS": str(out)}) as server:
        page = server.open(chromium)
        try:
            start = server.wait_for_file(out / "state-0.json", timeout=120)
            # awaiting inside the cell failed at once (the cell ran to its end), naming what works
            assert "host-holds-messages" in start["refused"] and "chat.send(" in start["refused"], start
            assert start["first_done"] is False and start["messages"] == []

            first = server.wait_for_file(out / "state-1.json", timeout=300)
            assert first["status"] == "ready" and first["first_done"] is True, first
            assert len(first["streamed"]) >= 1 and "".join(first["streamed"]) == first["first_text"], first
            assert first["messages"] == [{"role": "user", "content": "Hello! Who are you?"},
                                         {"role": "assistant", "content": first["first_text"]}]
            assert first["finish_reason"] in ("stop", "length"), first
            # the model files came over the comm (marimo has no Jupyter server extension)
            assert first["bytes_sent"] >= model_bytes, (first["bytes_sent"], model_bytes)
            shown = page.locator(".wlw-messages").inner_text(timeout=30_000)
            assert "Hello! Who are you?" in shown

            # a message typed in the page's widget is answered there and reaches Python's `messages`
            page.locator("textarea.wlw-input").fill("typed in the page")
            page.locator("textarea.wlw-input").press("Enter")
            typed = server.wait_for_file(out / "state-2.json", timeout=300)
            assert typed["messages"][:2] == first["messages"], typed
            assert typed["messages"][2] == {"role": "user", "content": "typed in the page"}, typed
            assert typed["messages"][3]["role"] == "assistant" and typed["messages"][3]["content"], typed

            # a long answer asked by Python from a button's handler, stopped by Python from another one
            page.get_by_role("button", name="Ask for a long answer").click()
            page.locator("button.wlw-stop:not([disabled])").wait_for(timeout=120_000)  # generating now
            time.sleep(1.0)  # let some pieces arrive
            page.get_by_role("button", name="Stop from Python").click()
            stopped = server.wait_for_file(out / "state-3.json", timeout=300)
            assert stopped["finish_reason"] == "abort", stopped
            assert stopped["messages"][4] == {"role": "user", "content": "Tell me a very long story."}, stopped
            assert stopped["messages"][5]["role"] == "assistant", stopped
            assert not any("pageerror" in line for line in server.console), server.console[-20:]
        finally:
            page.close()


def test_webgpu_teaching_widget_in_marimo_runs_submitted_calls_and_matches_numpy(chromium, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    with MarimoServer(ROOT / "notebooks" / "webgpu_marimo.py", env={"WEBLLM_WIDGET_RESULTS": str(out)}) as server:
        page = server.open(chromium)
        try:
            both = server.wait_for_file(out / "gpu-2.json", timeout=300)
            assert both["adapter"] and both["adapter"].get("vendor"), both
            # x @ W + b and the TensorIR row sums, computed on the page's WebGPU, against numpy
            assert set(both["max_abs_error"]) == {"affine", "sumsq"}, both
            assert both["max_abs_error"]["affine"] < 1e-3 and both["max_abs_error"]["sumsq"] < 1e-3, both
            assert "host-holds-messages" in both["refused"], both
            assert not any("pageerror" in line for line in server.console), server.console[-20:]
        finally:
            page.close()
