"""Kernel end of the transport: queue until ready, replies by id, errors by code, blob flow control.

These drive ``Channel``/``BlobSender`` with messages shaped like the page's; the browser tests in
``test_transport_browser.py`` and ``test_gpu_widget.py`` run the real page end.
"""
from __future__ import annotations

import asyncio
import hashlib

import numpy as np
import pytest

from webllm_widget.artifacts import Blob, BlobSender
from webllm_widget.errors import BadArtifact, KernelError, PageTimeout, WebLLMWidgetError
from webllm_widget.protocol import KINDS, PROTOCOL_VERSION, Channel
from webllm_widget._aio import run as run_async  # asyncio.run fails under Playwright's sync API


class RecordingWidget:
    """Stands in for the anywidget object: records what the kernel sends, lets the test play the page."""

    def __init__(self):
        self.sent: list[tuple[dict, list]] = []
        self._cb = None

    def on_msg(self, cb):
        self._cb = cb

    def send(self, msg, buffers=None):
        self.sent.append((msg, list(buffers or [])))

    def page_says(self, kind, buffers=None, **payload):
        self._cb(self, {"v": PROTOCOL_VERSION, "kind": kind, **payload}, buffers or [])


def test_sends_wait_for_ready_then_go_in_order():
    w = RecordingWidget()
    ch = Channel(w)
    ch.send("load", {"n": 1})
    ch.send("load", {"n": 2})
    assert w.sent == []
    w.page_says("ready", adapter=None)
    assert [m["n"] for m, _ in w.sent] == [1, 2]
    assert all(m["v"] == PROTOCOL_VERSION for m, _ in w.sent)
    ch.send("load", {"n": 3})
    assert w.sent[-1][0]["n"] == 3


def test_unknown_kind_is_refused():
    ch = Channel(RecordingWidget())
    with pytest.raises(ValueError):
        ch.send("lod")


def test_reply_resolves_by_id_and_events_go_to_callback():
    w = RecordingWidget()
    ch = Channel(w)
    w.page_says("ready")
    seen = []
    r1 = ch.request("ask", {"prompt": "a"}, on_event=lambda m, b: seen.append(m["text"]))
    r2 = ch.request("ask", {"prompt": "b"})
    id1, id2 = w.sent[0][0]["id"], w.sent[1][0]["id"]
    assert id1 != id2
    w.page_says("token", id=id1, text="Hel")
    w.page_says("token", id=id1, text="lo")
    w.page_says("done", id=id2, n=2)
    assert r2.done() and not r1.done()
    w.page_says("done", id=id1, n=1)
    assert seen == ["Hel", "lo"]
    assert r1.result()[0]["n"] == 1 and r2.result()[0]["n"] == 2


def test_page_error_raises_the_class_named_by_its_code():
    w = RecordingWidget()
    ch = Channel(w)
    w.page_says("ready")
    r = ch.request("call", {})
    w.page_says("error", id=w.sent[-1][0]["id"], code="kernel-error", message="boom", fn="main")

    async def wait():
        return await r

    with pytest.raises(KernelError) as info:
        run_async(wait())
    assert info.value.code == "kernel-error" and info.value.detail["fn"] == "main"


def test_await_reply_resolved_from_message_handler_while_awaiting():
    w = RecordingWidget()
    ch = Channel(w)

    async def main():
        r = ch.request("call", {})
        loop = asyncio.get_running_loop()
        # the page answers a little later, from the loop (as ipykernel delivers comm messages)
        loop.call_later(0.05, lambda: w.page_says("ready"))
        loop.call_later(0.1, lambda: w.page_says("result", id=w.sent[0][0]["id"], value=42))
        msg, _ = await r
        return msg["value"]

    assert run_async(main()) == 42


def test_unanswered_request_times_out_with_page_timeout():
    ch = Channel(RecordingWidget())

    async def main():
        await ch.request("call", {}, timeout=0.05)

    with pytest.raises(PageTimeout):
        run_async(main())


def test_page_reload_fails_pending_requests():
    w = RecordingWidget()
    ch = Channel(w)
    w.page_says("ready")
    r = ch.request("call", {})
    w.page_says("ready")
    assert r.done() and isinstance(r.exception(), WebLLMWidgetError)
    assert r.exception().code == "page-reloaded"


def test_kinds_match_the_page_side():
    from pathlib import Path
    import re

    ts = (Path(__file__).resolve().parents[2] / "js" / "src" / "wire" / "schema.gen.ts").read_text()
    block = ts[ts.index("export const KINDS"):ts.index("] as const")]
    assert tuple(re.findall(r'^\s*"([a-z-]+)"', block, re.M)) == KINDS
    assert f"PROTOCOL_VERSION = {PROTOCOL_VERSION};" in ts


def test_blob_sender_streams_slices_with_at_most_a_window_outstanding():
    w = RecordingWidget()
    ch = Channel(w)
    w.page_says("ready")
    data = np.random.default_rng(0).integers(0, 256, 10 * 1000 + 7, dtype=np.uint8).tobytes()
    sender = BlobSender(ch, chunk_size=1000, window=4)
    ref = sender.offer(Blob.from_bytes(data, "x.bin"))
    assert ref == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "name": "x.bin"}
    w.page_says("need-blob", id="b1", sha256=ref["sha256"])
    chunks = [(m, b) for m, b in w.sent if m["kind"] == "blob"]
    assert len(chunks) == 4  # the window
    assert all(isinstance(b[0], memoryview) for _, b in chunks)  # slices, no copies
    received = 4
    while received < 11:
        w.page_says("ack", id="b1", chunks=received, received=received * 1000)
        chunks = [(m, b) for m, b in w.sent if m["kind"] == "blob"]
        assert len(chunks) - received <= 4
        received = len(chunks)
    w.page_says("ack", id="b1", chunks=received, received=len(data))
    got = bytearray(len(data))
    for m, b in chunks:
        assert m["id"] == "b1" and m["sha256"] == ref["sha256"]
        got[m["offset"]:m["offset"] + len(b[0])] = b[0]
    assert bytes(got) == data
    assert sender.bytes_sent == len(data) and sender.blobs_sent == [ref["sha256"]]
    assert ch.bytes_sent == len(data)


def test_blob_never_offered_is_answered_with_bad_artifact():
    w = RecordingWidget()
    ch = Channel(w)
    w.page_says("ready")
    BlobSender(ch)
    w.page_says("need-blob", id="b9", sha256="ab" * 32)
    msg = w.sent[-1][0]
    assert msg["kind"] == "error" and msg["id"] == "b9" and msg["code"] == BadArtifact.code


def test_blob_from_path_is_memory_mapped_and_hashed(tmp_path):
    p = tmp_path / "w.bin"
    p.write_bytes(b"abc" * 1000)
    blob = Blob.from_path(p)
    assert blob.size == 3000 and blob.sha256 == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert bytes(memoryview(blob.data)[:3]) == b"abc"


def test_asked_for_http_the_kernel_publishes_the_file_and_answers_with_its_route(tmp_path, monkeypatch):
    from webllm_widget.server import blob_path

    monkeypatch.setenv("WEBLLM_WIDGET_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "shard.bin"
    src.write_bytes(b"\x01\x02" * 5000)
    w = RecordingWidget()
    ch = Channel(w)
    w.page_says("ready")
    sender = BlobSender(ch)
    ref = sender.offer(Blob.from_path(src))
    w.page_says("need-blob", id="b1", sha256=ref["sha256"], via="http")
    msg, bufs = w.sent[-1]
    assert msg["kind"] == "blob" and msg["id"] == "b1" and bufs == []
    assert msg["url"] == f"webllm-widget/blobs/{ref['sha256']}"
    published = blob_path(ref["sha256"])
    assert published is not None and published.read_bytes() == src.read_bytes()
    assert published.stat().st_ino == src.stat().st_ino  # a hard link, not a copy
    assert sender.bytes_sent == 0  # counted once the page says it has the bytes
    w.page_says("ack", id="b1", received=ref["size"], chunks=0, via="http")
    assert sender.bytes_published == sender.bytes_sent == ref["size"] and sender.bytes_comm == 0
    assert ch.bytes_sent == 0  # nothing went over the comm

    # The page could not use it (e.g. a server with another cache dir): the copy goes, the comm takes over.
    w.page_says("need-blob", id="b2", sha256=ref["sha256"], via="comm", http_error="HTTP 404", retry_of="b1")
    assert blob_path(ref["sha256"]) is None and src.exists()
    chunks = [(m, b) for m, b in w.sent if m["kind"] == "blob" and m["id"] == "b2"]
    assert chunks and sum(len(b[0]) for _, b in chunks) == ref["size"]


def test_kernel_told_to_use_the_comm_never_publishes(tmp_path, monkeypatch):
    monkeypatch.setenv("WEBLLM_WIDGET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WEBLLM_WIDGET_TRANSPORT", "comm")
    w = RecordingWidget()
    ch = Channel(w)
    w.page_says("ready")
    sender = BlobSender(ch)
    data = bytes(range(256)) * 10
    ref = sender.offer(Blob.from_bytes(data, "m.bin"))
    w.page_says("need-blob", id="b1", sha256=ref["sha256"], via="http")
    msg, bufs = w.sent[-1]
    assert "url" not in msg and bytes(bufs[0]) == data
    assert not (tmp_path / "cache" / "blobs" / ref["sha256"]).exists()
