"""Jupyter server extension: an HTTP route serving content-addressed blobs from the cache dir to the page.

Over the widget's comm a blob reaches the page at 40-70 MB/s; served by the Jupyter server over
HTTP the page can ``fetch`` it straight into Cache Storage several times faster. The route serves
only files named by their sha256 under ``cache_dir()/blobs/`` — nothing else on disk is reachable —
and the page verifies the sha256 as it does for the comm, so a stale or wrong file cannot load.

Routes (under the server's ``base_url``, authenticated like every Jupyter API)::

    GET webllm-widget/status           -> {"version", "blobs": true, "blobs_served", "bytes_served"}
    GET webllm-widget/blobs/<sha256>   -> the bytes (immutable, application/octet-stream)

The page probes ``status`` once; when it answers, the page asks the kernel for a blob with
``need-blob`` + ``via: "http"``, the kernel publishes it (``artifacts.BlobSender``) and answers with
the route, and the page fetches it. Where the probe fails (VS Code, Colab, a server without this
extension) or the fetch fails (a kernel on another machine, another cache dir), the blob comes over
the comm instead. By hand::

    from webllm_widget.server import publish_path, publish_bytes
    publish_path(model_dir / "params_shard_0.bin", sha256)   # hard link (or copy) into cache/blobs/
    publish_bytes(wasm, sha256)

Published entries stay until the cache dir is cleaned: hard links of files cost no space; copies of
in-memory blobs (small libraries) are bounded by the distinct contents published.

Enabled by the ``jupyter-config`` file the package installs
(``etc/jupyter/jupyter_server_config.d/webllm_widget.json``), or by hand with
``jupyter server extension enable webllm_widget.server``.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from .cache import cache_dir

#: Route prefix under the server's base_url.
ROUTE = "webllm-widget"
#: Bytes per write while streaming a file; big enough to keep Tornado's per-write cost small.
CHUNK = 4 << 20
#: Counted by this server process (shown by the status route): what crossed over HTTP, not the comm.
SERVED = {"blobs": 0, "bytes": 0}
_SHA = re.compile(r"^[0-9a-f]{64}$")


def blobs_dir() -> Path:
    """``cache_dir()/blobs``: where published blobs live, each file named by its sha256."""
    d = cache_dir() / "blobs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def blob_path(sha256: str) -> Path | None:
    """The file for ``sha256`` if it is published, else None. Anything not a sha256 gives None."""
    if not isinstance(sha256, str) or not _SHA.match(sha256):
        return None
    p = blobs_dir() / sha256
    return p if p.is_file() else None


def publish_path(path: str | os.PathLike, sha256: str) -> Path:
    """Make file ``path`` (whose sha256 the caller knows) servable: a hard link, else a copy.

    Returns the published path. Idempotent: an existing entry of the same size is kept.
    """
    if not _SHA.match(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    src = Path(path)
    dst = blobs_dir() / sha256
    if dst.is_file() and dst.stat().st_size == src.stat().st_size:
        return dst
    tmp = Path(tempfile.mkdtemp(prefix=".pub.", dir=dst.parent)) / sha256
    try:
        try:
            os.link(src, tmp)  # same filesystem (the model folders live in the cache too): no copy
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)
    return dst


def publish_bytes(data: bytes | memoryview, sha256: str) -> Path:
    """Write ``data`` (whose sha256 the caller knows) as a servable blob; atomic, idempotent."""
    from .cache import atomic_write_bytes

    if not _SHA.match(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    dst = blobs_dir() / sha256
    view = memoryview(data).cast("B")
    if dst.is_file() and dst.stat().st_size == view.nbytes:
        return dst
    atomic_write_bytes(dst, view)
    return dst


def route_path(sha256: str) -> str:
    """The blob's URL path relative to the server's base_url (what the kernel tells the page)."""
    return f"{ROUTE}/blobs/{sha256}"


def _handlers():
    # Imported here so the package (and the kernel) never needs jupyter_server unless it runs one.
    from jupyter_server.base.handlers import JupyterHandler
    from tornado import web

    from ._version import __version__

    class StatusHandler(JupyterHandler):
        @web.authenticated
        def get(self) -> None:
            self.set_header("Content-Type", "application/json")
            self.set_header("Cache-Control", "no-store")
            self.finish({"version": __version__, "blobs": True,
                         "blobs_served": SERVED["blobs"], "bytes_served": SERVED["bytes"]})

    class BlobHandler(JupyterHandler):
        @web.authenticated
        async def get(self, sha256: str) -> None:
            path = blob_path(sha256)
            if path is None:
                raise web.HTTPError(404, f"no blob {sha256} in the webllm-widget cache")
            size = path.stat().st_size
            self.set_header("Content-Type", "application/octet-stream")
            self.set_header("Content-Length", str(size))
            # Content-addressed: the same URL never changes meaning.
            self.set_header("Cache-Control", "private, max-age=31536000, immutable")
            with open(path, "rb") as f:
                while block := f.read(CHUNK):
                    self.write(block)
                    SERVED["bytes"] += len(block)
                    await self.flush()  # back-pressure: never hold more than one chunk in memory
            SERVED["blobs"] += 1
            self.finish()

    return StatusHandler, BlobHandler


def _jupyter_server_extension_points() -> list[dict]:
    return [{"module": "webllm_widget.server"}]


def _load_jupyter_server_extension(serverapp) -> None:
    from jupyter_server.utils import url_path_join

    status, blob = _handlers()
    base = serverapp.web_app.settings.get("base_url", "/")
    serverapp.web_app.add_handlers(".*$", [
        (url_path_join(base, ROUTE, "status"), status),
        (url_path_join(base, ROUTE, "blobs", r"([0-9a-f]{64})"), blob),
    ])
    with contextlib.suppress(Exception):
        serverapp.log.info(f"webllm-widget: serving blobs from {blobs_dir()} at {url_path_join(base, ROUTE)}/")
