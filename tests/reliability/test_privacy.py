"""Privacy: during a whole chat session (engine start, model copy, load, asks, stream, stop, typed text), the
page asks nothing of any host but the local server (127.0.0.1). Checked with the browser's request log, which
is first shown to see requests made by the page and by a Web Worker."""
from __future__ import annotations

import asyncio
from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.browser


def _local(url: str) -> bool:
    if url.startswith(("data:", "blob:http://127.0.0.1:")):
        return True
    u = urlparse(url)
    return u.scheme in ("http", "ws") and u.hostname == "127.0.0.1"


def _empty_page_cache(rel, file_server) -> int:
    """A fresh page with an empty Cache Storage, and a request log shown to see page and worker requests."""
    page = rel.host.open_page()
    # an empty page cache: everything the session needs must come over the widget's channel
    page.evaluate("async () => { for (const k of await caches.keys()) await caches.delete(k); }")
    rel.host.open_page()
    start = len(rel.seen_requests())

    # the log sees requests from the page and from a worker (else an empty log would prove nothing)
    rel.page.evaluate("""async (origin) => {
      await fetch(origin + '/probe-from-page').catch(() => {});
      const src = `fetch('${origin}/probe-from-worker').finally(() => postMessage(1))`;
      const w = new Worker(URL.createObjectURL(new Blob([src], {type: 'text/javascript'})));
      await new Promise(r => { w.onmessage = r; });
      w.terminate();
    }""", file_server.origin)
    seen = rel.seen_requests()[start:]
    assert any("/probe-from-page" in u for u in seen) and any("/probe-from-worker" in u for u in seen), seen
    return start


def test_a_chat_session_makes_no_request_beyond_the_local_server(rel, tiny_folder, file_server):
    start = _empty_page_cache(rel, file_server)
    chat = rel.chat(tiny_folder, temperature=0, max_tokens=6)

    async def session():
        await chat.ask("My private question about my health")
        got = [t async for t in chat.stream("and a second one")]
        h = chat.send("a long one", max_tokens=100)
        while not h.tokens and not h.done():
            await asyncio.sleep(0.02)
        h.stop()
        await h
        return got
    streamed = rel.run(session(), timeout=300)
    assert streamed and chat.bytes_sent > (tiny_folder / "model.wasm").stat().st_size  # the model did travel
    box = rel.page.locator(f"#widget-{chat.comm.comm_id} textarea")
    box.fill("typed in the page")
    box.press("Enter")

    async def typed():
        for _ in range(1200):
            if any(m["content"] == "typed in the page" for m in chat.messages) and chat.status == "ready":
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(chat.messages)
    rel.run(typed(), timeout=200)

    seen = rel.seen_requests()[start:]
    assert len(seen) >= 3
    assert [u for u in seen if not _local(u)] == []


@pytest.mark.slow
def test_a_session_with_the_built_in_model_makes_no_request_beyond_the_local_server(rel, file_server):
    """The issue's case: the built-in SmolLM2 (device auto: the CPU path on this software adapter), from an
    empty page cache through two answers, asks nothing of Hugging Face, a CDN or any other host."""
    start = _empty_page_cache(rel, file_server)
    chat = rel.chat("default", ready=False, device="auto", temperature=0, max_tokens=12)

    async def session():
        await chat.ready(timeout=1200)
        first = await chat.ask("What is the capital of France?")
        second = await chat.ask("And of Italy?")
        return first, second
    first, second = rel.run(session(), timeout=1800)
    assert "Paris" in first, first  # the built-in model did run
    assert second.strip() and len(chat.messages) == 4
    seen = rel.seen_requests()[start:]
    assert [u for u in seen if not _local(u)] == []
