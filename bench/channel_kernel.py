"""Kernel side of the channel benchmark: the bench widget and the measurements it runs inside a notebook cell.

Imported by the notebook that ``bench/channel.py`` writes and runs in JupyterLab (and by the transport
tests). A cell runs ``await run(widget, out_path, ...)``; awaiting is what lets the kernel see the
page's messages. Every load goes through the product code: ``BlobSender`` in the kernel,
``BlobLoader.get`` in the page (bytes verified by sha256 and stored in Cache Storage).
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from pathlib import Path

import anywidget

from webllm_widget.artifacts import Blob, BlobSender
from webllm_widget.cache import cache_dir
from webllm_widget.protocol import Channel

_ESM = Path(__file__).resolve().parent / "build" / "channel_widget.js"


class ChannelBench(anywidget.AnyWidget):
    """A widget with the project's Channel + BlobSender and a page side that times loads and emits tokens."""

    _esm = _ESM

    def __init__(self, **kw):
        super().__init__(**kw)
        self.created = time.monotonic()
        self.ch = Channel(self, check=False)  # its "call"/"result" messages are the benchmark's own
        self.blobs = BlobSender(self.ch)


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def _summary(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs}


async def _call(w: ChannelBench, op: str, timeout: float = 600, **payload) -> dict:
    msg, _ = await w.ch.request("call", {"op": op, **payload}, timeout=timeout)
    return msg


def _random_file(size: int) -> tuple[Path, str]:
    """Fresh random bytes in a file under the cache dir (same filesystem: publishing is a hard link, as
    for model folders). Returns (path, sha256)."""
    d = cache_dir() / "bench-channel"
    d.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    path = d / f"{time.monotonic_ns()}.bin"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


async def load(w: ChannelBench, blob: Blob, transport: str = "auto", check: bool = False, store: bool = True) -> dict:
    """Offer ``blob`` and have the page get it (``transport`` "auto" or "comm"; ``store``: also keep it in the
    page's Cache Storage); returns the page's report plus ``s`` (kernel wall time from offer to the page's
    answer) and the kernel's byte counters."""
    comm0, pub0, send0 = w.blobs.bytes_comm, w.blobs.bytes_published, w.blobs.send_s
    t0, cpu0 = time.perf_counter(), time.process_time()
    ref = w.blobs.offer(blob)
    msg = await _call(w, "load", ref=ref, transport=transport, check=check, store=store)
    msg["s"] = time.perf_counter() - t0
    msg["kernel_cpu_s"] = time.process_time() - cpu0  # the kernel process, all threads (zmq, iopub) included
    msg["kernel_comm_bytes"] = w.blobs.bytes_comm - comm0
    msg["kernel_published_bytes"] = w.blobs.bytes_published - pub0
    msg["kernel_send_s"] = w.blobs.send_s - send0
    return msg


async def run(w: ChannelBench, out: str, *, size_mb: int = 128, runs: int = 3, messages: int = 1000,
              interval_ms: float = 2.0, chunk_mb: tuple[float, ...] = (), windows: tuple[int, ...] = (),
              ready_timeout: float = 300) -> dict:
    """Measure comm and HTTP transfer of ``size_mb`` of random bytes and token latency; write JSON to ``out``.

    ``chunk_mb`` x ``windows`` add comm runs at other chunk sizes / flow-control windows (what limits the comm). Fresh bytes every run, page
    cache emptied first, so neither side can answer from memory.
    """
    from webllm_widget.server import blob_path

    page = await w.ch.wait_ready(ready_timeout)
    size = size_mb << 20
    result: dict = {"size_bytes": size, "runs": runs, "ready_s": round(time.monotonic() - w.created, 2),
                    "page_is_jupyter": bool(page.get("jupyter"))}

    # Comm: the page's BlobLoader told to use the comm; time from offer to the page's answer after it
    # verified the sha256 ("MBps": the bytes in page memory, as model files reach the engine) and, for
    # "MBps_stored" and the chunk/window variants, also stored the blob in Cache Storage.
    sweep = {}
    default = (w.blobs.chunk_size, w.blobs.window)
    variants = [default] + [(int(c * (1 << 20)), win) for c in (chunk_mb or (default[0] / (1 << 20),))
                            for win in (windows or (default[1],)) if (int(c * (1 << 20)), win) != default]
    for _ in range(runs):  # interleaved, so a change in the machine's load hits every variant alike
        for chunk, win in variants:
            w.blobs.chunk_size, w.blobs.window = chunk, win
            blob = Blob.from_bytes(os.urandom(size), "bench.bin")
            await _call(w, "clear")
            msg = await load(w, blob, "comm")
            assert msg["bytes"] == size and msg["via"]["comm"] == size and msg["kernel_comm_bytes"] == size, msg
            v = sweep.setdefault((chunk, win), {"MBps": [], "page_ms": [], "page_timing_ms": []})
            v["MBps"].append(size / 1e6 / msg["s"])
            v["page_ms"].append(msg["page_ms"])
            v["page_timing_ms"].append({**(msg.get("timing") or {}), "kernel_send_ms": msg["kernel_send_s"] * 1e3,
                                        "kernel_cpu_ms": msg["kernel_cpu_s"] * 1e3})
            del blob
        # the model-file path: verified in page memory and handed on, not stored by the loader
        w.blobs.chunk_size, w.blobs.window = default
        blob = Blob.from_bytes(os.urandom(size), "bench.bin")
        await _call(w, "clear")
        msg = await load(w, blob, "comm", store=False)
        assert msg["bytes"] == size and msg["via"]["comm"] == size, msg
        sweep.setdefault("unstored", []).append(size / 1e6 / msg["s"])
        del blob
    w.blobs.chunk_size, w.blobs.window = default
    d = sweep[default]
    result["comm"] = {"MBps": _summary(sweep.pop("unstored")), "MBps_stored": _summary(d["MBps"]),
                      "page_ms": _summary(d["page_ms"]),
                      "page_timing_ms": d["page_timing_ms"], "chunk_bytes": default[0], "window": default[1]}
    if len(variants) > 1:
        result["comm_variants"] = [{"chunk_bytes": c, "window": win, "MBps": _summary(v["MBps"])}
                                   for (c, win), v in sweep.items()]

    # HTTP: the same BlobLoader on "auto": it probes the server's webllm-widget route, the kernel publishes the
    # blob (a hard link of a file in the cache dir, as for model folders) and the page fetches it.
    secs: dict[bool, list[float]] = {False: [], True: []}
    via, timing = [], []
    for _ in range(runs):
        for store in (False, True):  # interleaved: into page memory (the model-file path), then also stored
            path, sha = _random_file(size)
            blob = Blob.from_path(path, sha256=sha)
            await _call(w, "clear")
            msg = await load(w, blob, "auto", store=store)
            via.append(msg["via"])
            timing.append(dict(msg.get("timing") or {}, store=store))
            if msg["via"]["http"] == size:
                secs[store].append(msg["s"])
            del blob
            path.unlink()
            if (p := blob_path(sha)) is not None:
                p.unlink()
    if secs[False] and secs[True]:
        result["http"] = {"MBps": _summary([size / 1e6 / s for s in secs[False]]),
                          "MBps_stored": _summary([size / 1e6 / s for s in secs[True]]),
                          "via": via, "page_timing_ms": timing}
        # Baseline under the same conditions: the Jupyter server's own /files/ endpoint (no extension, no
        # kernel round trip), the same size from a file under the notebook root (the kernel's working dir).
        files = []
        for _ in range(runs):
            data = os.urandom(size)
            Path("bench-blob.bin").write_bytes(data)
            ref = {"sha256": hashlib.sha256(data).hexdigest(), "size": size, "name": "bench-blob.bin"}
            await _call(w, "clear")
            msg = await _call(w, "load-files", ref=ref, path="files/bench-blob.bin")
            files.append(size / 1e6 / (msg["stored_ms"] / 1e3))
            Path("bench-blob.bin").unlink()
            del data
        result["http"]["files_endpoint_MBps_stored"] = _summary(files)
    else:
        result["http"] = {"skipped": "the page got no blob over HTTP (no webllm-widget route on this server)",
                          "via": via}

    # Latency: a Web Worker in the page emits `messages` tokens, one every interval_ms, each stamped with the
    # wall clock when emitted; the page relays them as the chat engine's tokens are; the kernel's observer
    # stamps arrival. Same machine, same clock.
    lat: list[float] = []

    def observe(msg: dict, _bufs: list) -> None:
        lat.append(time.time() * 1e3 - float(msg["t"]))

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await w.ch.request("call", {"op": "emit", "n": messages, "interval_ms": interval_ms},
                       on_event=observe, timeout=600)
    result["latency_ms"] = {"n": len(lat), "sent": messages, "interval_ms": interval_ms,
                            # CPU of the whole kernel process (all threads) per token: independent of the load.
                            # ipykernel's fixed per-message cost (status busy/idle, stdout/stderr flushes handed
                            # to its IO thread) is most of it.
                            "kernel_cpu_ms_per_token": (time.process_time() - cpu0) * 1e3 / max(1, len(lat)),
                            "emit_wall_s": time.perf_counter() - wall0,
                            "p50": _pct(lat, 50), "p90": _pct(lat, 90), "p99": _pct(lat, 99),
                            "max": max(lat), "mean": statistics.fmean(lat)}
    tmp = Path(str(out) + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)
    return result
