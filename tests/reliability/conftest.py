"""Fixtures of the reliability suite: one browser, one built tiny model, one widget host page for the package.

Every case here asserts the exact error code of a fault and that the next normal request works, through
the real page (headless Chromium, SwiftShader WebGPU) and the real Chat widget. The tiny random-weight
Llama (tests/tiny.py) is used everywhere: its words are noise, so content is compared only against a
fresh greedy run of the same model, never against expected text.
"""
from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from browser import HostServer, WidgetHost, _BridgeComm  # noqa: E402


@pytest.fixture(scope="session")
def tiny_folder() -> Path:
    """The tiny Llama (seed 0) compiled to a web-llm folder (cached by content hash; same one E's tests use)."""
    from tiny import TinyLlama

    from webllm_widget.cache import cache_dir
    from webllm_widget.compile.pipeline import build_model_folder

    hf = TinyLlama.make(seed=0).write_hf(cache_dir() / "test-sources" / "tiny-llama-seed0")
    return build_model_folder(hf, quantization="q4f32_1", progress=False)


def copy_model(src: Path, dst: Path) -> Path:
    """A private copy of a model folder, to damage in a test (the cached one stays intact)."""
    shutil.copytree(src, dst)
    return dst


class RelHost:
    """A WidgetHost of its own (own loopback server) on the session's WebGPU Chromium.

    ``chat(...)`` creates a Chat on the host loop; ``dom(chat, expr)`` evaluates ``expr`` with ``root``
    bound to that widget's ``.wlw-chat`` element; ``requests`` logs every URL the browser asked for.
    """

    def __init__(self, chromium: Any):
        self.server = HostServer()
        self.chromium = chromium
        self.host = WidgetHost(self.server, chromium)
        self.requests: list[str] = []
        chromium.context.on("request", lambda r: self.requests.append(r.url))

    def __enter__(self) -> "RelHost":
        self.host.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.host.__exit__(*exc)
        self.server.close()

    @property
    def page(self) -> Any:
        return self.host.page

    def run(self, coro, timeout: float = 300) -> Any:
        return self.host.run(coro, timeout)

    def chat(self, model: Any, ready: bool = True, **kw: Any) -> Any:
        """A Chat showing in the page; with ``ready`` also waits for its model."""
        from webllm_widget import Chat

        async def make():
            # Widgets go to whichever host patched comm.create_comm last: make sure it is this one.
            import comm

            saved = comm.create_comm
            comm.create_comm = lambda **ckw: _BridgeComm(self.host, **ckw)
            try:
                c = Chat(model=str(model), **kw)
            finally:
                comm.create_comm = saved
            if ready:
                await c.ready(timeout=300)
            return c
        return self.run(make())

    def dom(self, chat: Any, expr: str) -> Any:
        cid = chat.comm.comm_id
        return self.page.evaluate(
            "([cid, body]) => { const root = document.querySelector(`#widget-${cid} .wlw-chat`);"
            " return (new Function('root', `return (${body});`))(root); }", [cid, expr])

    def close(self, chat: Any) -> None:
        self.host.server.call(chat.close)


@pytest.fixture(scope="package")
def rel(chromium):
    """The suite's widget host page (one page for the package; tests that need a fresh page open one)."""
    with RelHost(chromium) as h:
        yield h


async def wait_for(pred, timeout: float = 120, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise TimeoutError(f"waited {timeout} s for {what}")
        await asyncio.sleep(0.05)
