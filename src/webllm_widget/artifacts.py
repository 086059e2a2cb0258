"""Content-addressed blobs sent from kernel to page: hashing, offering, and chunked sending with flow control.

The kernel offers a blob as ``{"sha256", "size", "name"}`` (a :class:`BlobRef`) inside some
request (e.g. ``load``). The page looks the sha256 up in its Cache Storage and asks ``need-blob``
only for what it lacks; the kernel then sends ``blob`` chunks (binary buffers, memoryview slices
of the data, no copies), at most :data:`WINDOW` chunks ahead of the page's last ``ack``. The page
verifies the sha256 before storing, so a second load of the same content sends nothing.

Where the Jupyter server runs this package's extension (``server.py``), the page asks with
``via: "http"``: the kernel then publishes the blob into ``cache_dir()/blobs`` (a hard link for a
file) and answers with one ``blob`` message carrying ``url`` (relative to the server's base URL) and
no buffer; the page fetches it from there, several times faster than the comm. If publishing fails,
or ``WEBLLM_WIDGET_TRANSPORT=comm`` is set, the kernel sends chunks instead and the page takes them.

Example::

    sender = BlobSender(channel)
    ref = sender.offer(Blob.from_bytes(wasm, "model.wasm"))   # -> {"sha256": ..., "size": ..., "name": ...}
    channel.request("load", {"library": ref})
    sender.bytes_sent                                          # bytes of blob data sent so far
"""
from __future__ import annotations

import hashlib
import mmap
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import BadArtifact
from .protocol import ACK, BLOB, ERROR, NEED_BLOB, Channel
from .wire.schema import BlobChunk, BlobRef, ErrorMessage

#: Environment variable: ``comm`` makes the kernel answer every blob request over the comm.
TRANSPORT_ENV = "WEBLLM_WIDGET_TRANSPORT"

#: Bytes per chunk. Anything from 256 KB to 16 MB moves at the same rate over the comm; big enough
#: to stay far below the iopub message-rate limit, small enough to show progress.
CHUNK_SIZE = 1 << 20
#: Chunks in flight before the page's ack (the page acks every 8).
WINDOW = 16

_STATIC = Path(__file__).with_name("static")


@dataclass(frozen=True)
class Blob:
    """Bytes with their sha256, ready to offer. ``data`` is bytes-like; files are memory-mapped."""

    name: str
    sha256: str
    size: int
    data: Any = field(repr=False, compare=False)
    #: The file holding exactly these bytes, when there is one (published by hard link, not a copy).
    path: Path | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, name: str, sha256: str | None = None) -> "Blob":
        view = memoryview(data).cast("B")
        digest = sha256 or hashlib.sha256(view).hexdigest()
        return cls(name=name, sha256=digest, size=view.nbytes, data=view)

    @classmethod
    def from_path(cls, path: str | os.PathLike, name: str | None = None, sha256: str | None = None) -> "Blob":
        """Memory-map a file (no copy into the kernel's memory). Give ``sha256`` when already known."""
        p = Path(path)
        size = p.stat().st_size
        if size == 0:
            return cls.from_bytes(b"", name or p.name)
        with open(p, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mm)
        digest = sha256 or hashlib.sha256(view).hexdigest()
        return cls(name=name or p.name, sha256=digest, size=size, data=view, path=p)

    def ref(self) -> BlobRef:
        """What travels in a request: enough for the page to look the blob up and check it."""
        return BlobRef(sha256=self.sha256, size=self.size, name=self.name)


_static_cache: dict[tuple[str, int, int], Blob] = {}


def static_blob(filename: str) -> Blob:
    """A bundle built by ``npm run build`` into ``webllm_widget/static/`` (e.g. ``tvmjs.js``), as a Blob.

    Raises :class:`~webllm_widget.errors.ToolchainMissing` with the fix when it was not built.
    """
    path = _STATIC / filename
    try:
        st = path.stat()
    except FileNotFoundError:
        from .errors import ToolchainMissing

        raise ToolchainMissing(
            f"{path} is missing: the JavaScript bundles were not built. Run `npm ci && npm run build` in js/ "
            "(or `make setup`)."
        ) from None
    key = (str(path), st.st_size, st.st_mtime_ns)
    blob = _static_cache.get(key)
    if blob is None:
        b = Blob.from_bytes(path.read_bytes(), filename)
        blob = _static_cache[key] = Blob(b.name, b.sha256, b.size, b.data, path=path)
    return blob


class _Transfer:
    __slots__ = ("blob", "id", "next_offset", "chunks_sent", "acked")

    def __init__(self, blob: Blob, id: str):
        self.blob, self.id = blob, id
        self.next_offset = 0
        self.chunks_sent = 0
        self.acked = 0


class BlobSender:
    """Answers the page's ``need-blob`` requests for blobs this kernel has offered.

    Runs entirely in message handlers: no thread, no await needed, so transfers proceed whenever
    the kernel handles widget messages (between cells, or while a cell awaits).
    """

    def __init__(self, channel: Channel, *, chunk_size: int = CHUNK_SIZE, window: int = WINDOW,
                 on_progress: Callable[[Blob, int], None] | None = None):
        self.channel = channel
        self.chunk_size = chunk_size
        self.window = window
        self.on_progress = on_progress
        self.bytes_sent = 0           # blob bytes sent, either way; a second load of cached content adds nothing
        self.bytes_comm = 0           # ... of which over the comm (chunks)
        self.bytes_published = 0      # ... of which the page fetched over the HTTP route (counted at its ack)
        self.send_s = 0.0             # kernel time spent handing chunks to the comm (what the kernel costs a transfer)
        self.blobs_sent: list[str] = []  # sha256 of each completed transfer, in order
        self._offered: dict[str, Blob] = {}
        self._transfers: dict[str, _Transfer] = {}
        self._published: dict[str, Blob] = {}  # request id -> blob the page is fetching over HTTP
        channel.on(NEED_BLOB, self._on_need)
        channel.on(ACK, self._on_ack)
        channel.on(ERROR, self._on_error)

    def offer(self, blob: Blob) -> dict:
        """Make ``blob`` available to the page; returns its ref for a request payload."""
        self._offered[blob.sha256] = blob
        return blob.ref()

    def _on_need(self, msg: dict, _buffers: list) -> None:
        sha = msg.get("sha256")
        blob = self._offered.get(sha)
        rid = msg.get("id")
        if blob is None:
            self.channel.send(ERROR, ErrorMessage(
                code=BadArtifact.code, message=f"the kernel has no blob {sha} (it was never offered, or the kernel "
                "restarted); run the cell that loads it again"), id=rid)
            return
        if msg.get("http_error"):
            self._published.pop(msg.get("retry_of"), None)
            self._unpublish(blob)  # the page could not use the published copy: never offer it again as is
        if msg.get("via") == "http" and self._publish(blob, rid):
            return
        t = self._transfers[rid] = _Transfer(blob, rid)
        self._pump(t)

    def _publish(self, blob: Blob, rid: str) -> bool:
        """Make ``blob`` servable by the server extension and tell the page where; False to use the comm."""
        if os.environ.get(TRANSPORT_ENV, "").lower() == "comm":
            return False
        from .server import publish_bytes, publish_path, route_path

        try:
            if blob.path is not None:
                publish_path(blob.path, blob.sha256)
            else:
                publish_bytes(blob.data, blob.sha256)
        except OSError:
            return False  # read-only or full cache dir: the comm still works
        self._published[rid] = blob
        self.channel.send(BLOB, BlobChunk(sha256=blob.sha256, size=blob.size, url=route_path(blob.sha256)), id=rid)
        return True

    @staticmethod
    def _unpublish(blob: Blob) -> None:
        from .server import blob_path

        path = blob_path(blob.sha256)
        if path is not None:
            try:
                path.unlink()  # a hard link or a copy: the kernel's own file stays
            except OSError:
                pass

    def _on_ack(self, msg: dict, _buffers: list) -> None:
        blob = self._published.pop(msg.get("id"), None)
        if blob is not None:  # the page fetched and verified a published blob: count it as delivered
            self.bytes_published += blob.size
            self.bytes_sent += blob.size
            self.blobs_sent.append(blob.sha256)
            if self.on_progress:
                self.on_progress(blob, blob.size)
            return
        t = self._transfers.get(msg.get("id"))
        if t is None:
            return
        t.acked = max(t.acked, int(msg.get("chunks", 0)))
        if self.on_progress:
            self.on_progress(t.blob, int(msg.get("received", 0)))
        if t.next_offset >= t.blob.size and t.acked >= t.chunks_sent:
            del self._transfers[t.id]
            self.blobs_sent.append(t.blob.sha256)
        else:
            self._pump(t)

    def _on_error(self, msg: dict, _buffers: list) -> None:
        self._transfers.pop(msg.get("id"), None)
        self._published.pop(msg.get("id"), None)

    def _pump(self, t: _Transfer) -> None:
        t0 = time.perf_counter()
        view = memoryview(t.blob.data)
        while t.next_offset < t.blob.size and t.chunks_sent - t.acked < self.window:
            end = min(t.next_offset + self.chunk_size, t.blob.size)
            chunk = view[t.next_offset:end]
            self.channel.send(BLOB, BlobChunk(sha256=t.blob.sha256, offset=t.next_offset, size=t.blob.size),
                              [chunk], id=t.id)
            self.bytes_sent += end - t.next_offset
            self.bytes_comm += end - t.next_offset
            t.next_offset = end
            t.chunks_sent += 1
        self.send_s += time.perf_counter() - t0
