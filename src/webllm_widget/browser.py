"""Headless Chromium with WebGPU: find the browser, launch it with flags that give an adapter, serve pages to it.

Used by the headless runner (``webllm-widget chat``) and the browser tests. The page must be a secure
context to see ``navigator.gpu``, so pages are served over HTTP from loopback under a stable origin
(``http://webllm-widget.localhost``, mapped to a free port) so Cache Storage survives between runs.
"""
from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socketserver
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable

from .errors import ToolchainMissing, WebGPUUnavailable

#: Flag sets that give a working ``requestAdapter()`` with SwiftShader; tried in order.
WEBGPU_FLAG_SETS: list[list[str]] = [
    ["--enable-unsafe-webgpu", "--use-angle=swiftshader", "--use-webgpu-adapter=swiftshader",
     "--disable-vulkan-surface"],
    ["--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=swiftshader",
     "--use-angle=swiftshader", "--disable-vulkan-surface"],
]
#: The machine may have no network: without these Chromium keeps retrying in the background.
QUIET_FLAGS = ["--no-sandbox", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-quic"]

ORIGIN_HOST = "webllm-widget.localhost"

PROBE_JS = """async (ms) => {
  if (!navigator.gpu) return {ok: false, why: 'navigator.gpu is missing'};
  const timeout = new Promise(r => setTimeout(() => r(null), ms));
  const a = await Promise.race([navigator.gpu.requestAdapter(), timeout]);
  if (!a) return {ok: false, why: 'no adapter (or requestAdapter hung)'};
  const i = a.info || {};
  return {ok: true, vendor: i.vendor, architecture: i.architecture, description: i.description,
          is_fallback: !!(i.isFallbackAdapter ?? a.isFallbackAdapter), features: [...a.features]};
}"""


def find_chromium() -> str:
    """Path of a Chromium/Chrome binary: ``$WEBLLM_WIDGET_CHROMIUM``, Debian's, or one on PATH."""
    env = os.environ.get("WEBLLM_WIDGET_CHROMIUM")
    candidates = [env] if env else []
    candidates += ["/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser",
                   "/usr/bin/google-chrome", shutil.which("chromium") or "", shutil.which("google-chrome") or ""]
    for c in candidates:
        if c and Path(c).exists():
            return c
    raise ToolchainMissing("no Chromium found: install it (Debian: apt-get install -y chromium) "
                           "or set WEBLLM_WIDGET_CHROMIUM to a Chrome/Chromium binary")


Route = Callable[[str], "tuple[bytes | Path, str] | None"]


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "webllm-widget"

    def log_message(self, *args):  # keep the terminal for the chat
        pass

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        got = (b"<!doctype html><title>probe</title>", "text/html") if path == "/__probe" \
            else self.server.route(path)  # type: ignore[attr-defined]
        if got is None:
            self.send_error(404)
            return
        body, ctype = got
        if isinstance(body, Path):
            size = body.stat().st_size
            self.send_response(200)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(size))
            self.send_header("cache-control", "no-store")
            self.end_headers()
            with open(body, "rb") as f:
                shutil.copyfileobj(f, self.wfile, 1 << 20)
            self.server.bytes_sent += size  # type: ignore[attr-defined]
        else:
            self.send_response(200)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.send_header("cache-control", "no-store")
            self.end_headers()
            self.wfile.write(body)
            self.server.bytes_sent += len(body)  # type: ignore[attr-defined]


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


@dataclass
class PageServer:
    """A loopback HTTP server answering from ``route(path) -> (bytes | Path, content_type) | None``."""

    route: Route
    port: int = 0
    bytes_sent: int = 0
    _srv: _Server | None = field(default=None, repr=False)

    def __enter__(self) -> "PageServer":
        srv = _Server(("127.0.0.1", 0), _Handler)
        srv.route = self.route  # type: ignore[attr-defined]
        srv.bytes_sent = 0  # type: ignore[attr-defined]
        self._srv = srv
        self.port = srv.server_address[1]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._srv:
            self._srv.shutdown()
            self._srv.server_close()

    @property
    def sent(self) -> int:
        """Bytes served so far (what the page had to fetch)."""
        return self._srv.bytes_sent if self._srv else 0  # type: ignore[attr-defined]

    @property
    def origin(self) -> str:
        return f"http://{ORIGIN_HOST}"


@dataclass
class WebGPUBrowser:
    """A launched Chromium (Playwright persistent context) whose pages see a WebGPU adapter."""

    context: object
    flags: list[str]
    adapter: dict


@contextlib.asynccontextmanager
async def launch_webgpu(server: PageServer, *, profile_dir: str | os.PathLike | None = None,
                        headless: bool = True, probe_timeout_ms: int = 20000,
                        flag_sets: list[list[str]] | None = None) -> AsyncIterator[WebGPUBrowser]:
    """Launch Chromium, try each WebGPU flag set until a page gets an adapter, and yield it.

    ``server`` is mapped to the stable origin ``http://webllm-widget.localhost`` (so the page's Cache
    Storage is the same from run to run with the same ``profile_dir``). Raises ``WebGPUUnavailable``
    when no flag set gives an adapter. Async (Playwright's async API) so a driver can stop a generation
    while it waits for it.
    """
    from playwright.async_api import async_playwright

    exe = find_chromium()
    tmp = None
    if profile_dir is None:
        tmp = tempfile.mkdtemp(prefix="webllm-widget-profile-")
        profile_dir = tmp
    sets = flag_sets if flag_sets is not None else WEBGPU_FLAG_SETS
    tried: list[str] = []
    try:
        async with async_playwright() as pw:
            for flags in sets:
                args = [*QUIET_FLAGS, *flags, "--headless=new" if headless else "",
                        f"--host-resolver-rules=MAP {ORIGIN_HOST}:80 127.0.0.1:{server.port}"]
                ctx = await pw.chromium.launch_persistent_context(
                    str(profile_dir), executable_path=exe, headless=headless,
                    args=[a for a in args if a], ignore_default_args=["--headless"] if headless else None)
                page = ctx.pages[0] if ctx.pages else await ctx.new_page()
                try:
                    await page.goto(f"{server.origin}/__probe", timeout=30000)
                    info = await page.evaluate(PROBE_JS, probe_timeout_ms)
                except Exception as e:  # a hung or crashed GPU process: try the next flag set
                    info = {"ok": False, "why": str(e)[:200]}
                if info.get("ok"):
                    try:
                        yield WebGPUBrowser(ctx, flags, info)
                    finally:
                        await ctx.close()
                    return
                tried.append(f"{' '.join(flags)}: {info.get('why')}")
                await ctx.close()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    raise WebGPUUnavailable("Chromium gave no WebGPU adapter with any flag set tried:\n  " + "\n  ".join(tried))
