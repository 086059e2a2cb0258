"""Kernel side of the channel benchmark: the bench widget and the measurements it runs inside a notebook cell.

Imported by the notebook that ``bench/channel.py`` writes and runs in JupyterLab. A cell runs
``await run(widget, out_path, ...)``; awaiting is what lets the kernel see the page's messages.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import anywidget

from webllm_widget.artifacts import Blob, BlobSender
from webllm_widget.protocol import Channel

_ESM = Path(__file__).resolve().parent / "build" / "channel_widget.js"


class ChannelBench(anywidget.AnyWidget):
    """A widget with the project's Channel + BlobSender and a page side that times loads and emits tokens."""

    _esm = _ESM

    def __init__(self, **kw):
        super().__init__(**kw)
        self.ch = Channel(self)
        self.blobs = BlobSender(self.ch)


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def _summary(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs}


async def _call(w: ChannelBench, op: str, timeout: float = 600, **payload) -> dict:
    msg, _ = await w.ch.request("call", {"op": op, **payload}, timeout=timeout)
    return msg


async def run(w: ChannelBench, out: str, *, size_mb: int = 128, runs: int = 3, messages: int = 1000,
              interval_ms: float = 2.0) -> dict:
    """Measure comm and HTTP transfer of ``size_mb`` of random bytes and token latency; write JSON to ``out``."""
    from webllm_widget.server import publish_bytes

    await w.ch.wait_ready(120)
    size = size_mb << 20
    result: dict = {"size_bytes": size, "runs": runs}

    # Comm: BlobSender answering the page's BlobLoader; time from offer (the request) to the page's
    # reply after it verified the sha256 and stored the blob in Cache Storage. Fresh bytes every run
    # so neither side can answer from memory.
    comm_mbs, comm_page = [], []
    for _ in range(runs):
        data = os.urandom(size)
        blob = Blob.from_bytes(data, "bench.bin")
        await _call(w, "clear")
        sent0 = w.blobs.bytes_sent
        t0 = time.perf_counter()
        ref = w.blobs.offer(blob)
        msg = await _call(w, "load-comm", ref=ref)
        dt = time.perf_counter() - t0
        assert msg["stored"] and msg["bytes"] == size, msg
        assert w.blobs.bytes_sent - sent0 == size, "the blob did not travel over the comm"
        comm_mbs.append(size / 1e6 / dt)
        comm_page.append(msg["page_ms"])
        del data, blob
    result["comm"] = {"MBps": _summary(comm_mbs), "page_ms": _summary(comm_page),
                      "chunk_bytes": w.blobs.chunk_size, "window": w.blobs.window}

    # HTTP: the server extension's route; the kernel publishes the blob into the cache dir
    # (a file write, timed separately), the page fetches it straight into Cache Storage.
    probe = await _call(w, "probe")
    if probe.get("route"):
        stored, verified, publish = [], [], []
        for _ in range(runs):
            data = os.urandom(size)
            blob = Blob.from_bytes(data, "bench.bin")
            await _call(w, "clear")
            t0 = time.perf_counter()
            path = publish_bytes(data, blob.sha256)
            publish.append(time.perf_counter() - t0)
            msg = await _call(w, "load-http", ref=blob.ref())
            stored.append(size / 1e6 / (msg["stored_ms"] / 1e3))
            verified.append(size / 1e6 / (msg["verified_ms"] / 1e3))
            path.unlink()
            del data, blob
        result["http"] = {"MBps_stored": _summary(stored), "MBps_verified": _summary(verified),
                          "publish_s": _summary(publish), "base_url": probe.get("base")}
        # Baseline under the same conditions: the Jupyter server's own /files/ endpoint (no extension),
        # the same bytes from a file under the notebook root (the kernel's working directory).
        files = []
        for _ in range(runs):
            data = os.urandom(size)
            blob = Blob.from_bytes(data, "bench.bin")
            Path("bench-blob.bin").write_bytes(data)
            await _call(w, "clear")
            msg = await _call(w, "load-http", ref=blob.ref(), path="files/bench-blob.bin")
            files.append(size / 1e6 / (msg["stored_ms"] / 1e3))
            Path("bench-blob.bin").unlink()
            del data, blob
        result["http"]["files_endpoint_MBps_stored"] = _summary(files)
    else:
        result["http"] = {"skipped": "the Jupyter server has no webllm-widget route (extension not enabled)"}

    # Latency: the page emits `messages` token messages, one every interval_ms, each stamped with its
    # wall clock; the kernel's observer stamps arrival. Same machine, same clock.
    lat: list[float] = []

    def observe(msg: dict, _bufs: list) -> None:
        lat.append(time.time() * 1e3 - float(msg["t"]))

    await w.ch.request("call", {"op": "emit", "n": messages, "interval_ms": interval_ms},
                       on_event=observe, timeout=600)
    result["latency_ms"] = {"n": len(lat), "sent": messages, "interval_ms": interval_ms,
                            "p50": _pct(lat, 50), "p90": _pct(lat, 90), "p99": _pct(lat, 99),
                            "max": max(lat), "mean": statistics.fmean(lat)}
    Path(out).write_text(json.dumps(result, indent=1))
    return result
