"""Test harness: headless Chromium with real WebGPU, a loopback server, and a page that hosts our widgets.

Pieces (the fixtures in ``conftest.py`` wire them up):

- :func:`launch_chromium` — Debian's Chromium via Playwright (sync API), fresh profile dir, the
  no-network flags, and the first WebGPU flag set whose ``requestAdapter()`` answers within a timeout.
- :class:`HostServer` — a Tornado server on 127.0.0.1 in its own thread with its own asyncio loop
  (the "kernel" loop): serves ``/static/*`` (our built bundles), ``/blank.html``, routes tests add,
  and a WebSocket that carries widget comm messages to a page.
- :class:`WidgetHost` — runs Python widgets (real ``anywidget`` classes, their real ``Channel``)
  on that loop and shows them in ``/host.html``, a small page that plays the notebook front end's
  part of anywidget's contract: build a model from the comm's state, import ``_esm``, call
  ``initialize({model})`` then ``render({model, el})``, deliver custom messages with binary buffers.
  JupyterLab itself is driven by ``tests/helpers/jupyter.py``; this host makes browser tests fast.

Example (inside a test)::

    def test_something(widget_host):
        async def go():
            gpu = WebGPU()
            widget_host.show(gpu)
            return await gpu.wait_ready()
        adapter = widget_host.run(go())

Later tests can import bundles in a plain page::

    page = bundle_page                       # fixture: http://127.0.0.1:<port>/blank.html
    page.evaluate("async () => (await import('/static/tvmjs.js')).RUNTIME_NAME")
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import tempfile
import threading
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Awaitable, Callable

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "src" / "webllm_widget" / "static"

WEBGPU_FLAG_SETS: list[list[str]] = [
    ["--enable-unsafe-webgpu", "--use-angle=swiftshader", "--use-webgpu-adapter=swiftshader",
     "--disable-vulkan-surface"],
    ["--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=swiftshader",
     "--use-angle=swiftshader", "--disable-vulkan-surface"],
]
#: No network on the test machine: without these Chromium keeps retrying in the background.
QUIET_FLAGS = ["--headless=new", "--no-sandbox", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-quic",
               "--disable-features=MediaRouter,OptimizationHints,Translate"]

PROBE_JS = """async (ms) => {
  if (!navigator.gpu) return {ok: false, why: 'navigator.gpu is missing'};
  const timeout = new Promise(r => setTimeout(() => r('timeout'), ms));
  let a;
  try { a = await Promise.race([navigator.gpu.requestAdapter(), timeout]); }
  catch (e) { return {ok: false, why: String(e)}; }
  if (a === 'timeout') return {ok: false, why: `requestAdapter() did not answer in ${ms} ms`};
  if (!a) return {ok: false, why: 'requestAdapter() returned null'};
  const i = a.info || {};
  return {ok: true, vendor: i.vendor, architecture: i.architecture,
          isFallbackAdapter: !!(i.isFallbackAdapter ?? a.isFallbackAdapter), features: [...a.features]};
}"""


def find_chromium() -> str:
    for c in (os.environ.get("WEBLLM_WIDGET_CHROMIUM"), "/usr/lib/chromium/chromium", "/usr/bin/chromium",
              shutil.which("chromium")):
        if c and Path(c).exists():
            return c
    raise RuntimeError("no Chromium: install Debian's (`apt-get install -y chromium`) or set WEBLLM_WIDGET_CHROMIUM")


class Chromium:
    """A running Chromium (Playwright persistent context). ``flags`` and ``adapter`` say what worked."""

    def __init__(self, playwright: Any, context: Any, profile: str, flags: list[str], adapter: dict | None):
        self.playwright, self.context, self.profile = playwright, context, profile
        self.flags, self.adapter = flags, adapter
        self.console: list[str] = []
        context.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        context.on("weberror", lambda e: self.console.append(f"pageerror: {e.error}"))

    def new_page(self) -> Any:
        return self.context.new_page()

    def close(self) -> None:
        try:
            self.context.close()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


_PLAYWRIGHT: Any = None


def playwright_instance() -> Any:
    """The one Playwright (sync API) of this process: the sync API allows one per thread."""
    global _PLAYWRIGHT
    if _PLAYWRIGHT is None:
        from playwright.sync_api import sync_playwright

        _PLAYWRIGHT = sync_playwright().start()
    return _PLAYWRIGHT


def stop_playwright() -> None:
    global _PLAYWRIGHT
    if _PLAYWRIGHT is not None:
        _PLAYWRIGHT.stop()
        _PLAYWRIGHT = None


def launch_chromium(probe_url: str, *, webgpu: bool = True, probe_timeout_ms: int = 15000,
                    extra_args: tuple[str, ...] = ()) -> Chromium:
    """Start headless Chromium; with ``webgpu`` try each flag set until a page at ``probe_url`` gets an adapter.

    Without ``webgpu`` the browser starts without ``--enable-unsafe-webgpu`` (for no-WebGPU tests).
    ``extra_args`` are added to every flag set (e.g. ``--js-flags=...`` for a benchmark).
    Raises RuntimeError listing every flag set tried and why it failed.
    """
    exe = find_chromium()
    sets = [[*f, *extra_args] for f in (WEBGPU_FLAG_SETS if webgpu else [["--disable-gpu"]])]
    tried = []
    pw = playwright_instance()
    for flags in sets:
        profile = tempfile.mkdtemp(prefix="wlw-chromium-")
        ctx = None
        try:
            ctx = pw.chromium.launch_persistent_context(
                profile, executable_path=exe, headless=True, args=[*QUIET_FLAGS, *flags],
                ignore_default_args=["--headless"])
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.goto(probe_url, timeout=30000)
            info = page.evaluate(PROBE_JS, probe_timeout_ms)
            page.close()
        except Exception as e:  # a hung or crashed GPU process: try the next flag set
            info = {"ok": False, "why": f"{type(e).__name__}: {str(e)[:300]}"}
        if info.get("ok") or not webgpu:
            return Chromium(pw, ctx, profile, flags, info if info.get("ok") else None)
        tried.append(f"{' '.join(flags)} -> {info.get('why')}")
        if ctx is not None:
            try:
                ctx.close()
            except Exception:
                pass
        shutil.rmtree(profile, ignore_errors=True)
    raise RuntimeError("Chromium gave no WebGPU adapter with any flag set:\n  " + "\n  ".join(tried))



class DetachableChromium:
    """Headless Chromium started as a plain process and driven over CDP until :meth:`detach`.

    For measurements of what a user's page does: while Playwright is attached it keeps the Network domain
    on, and Chromium then copies every WebSocket frame's payload (base64) to the driver, which halves the
    comm's throughput into a JupyterLab page (bench/channel.py). After ``detach()`` no DevTools client is
    attached; the page runs on, as in a user's browser. ``new_page()`` works until then.
    """

    def __init__(self, flags: list[str] | None = None, start_timeout: float = 30):
        import subprocess
        import time
        import urllib.request

        self.profile = tempfile.mkdtemp(prefix="wlw-chromium-")
        port = free_port()
        self.proc = subprocess.Popen(
            [find_chromium(), *QUIET_FLAGS, f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={self.profile}", *(flags or ["--disable-gpu"]), "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                with urllib.request.urlopen(endpoint + "/json/version", timeout=2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"Chromium did not open its DevTools port {port} within {start_timeout} s")
                time.sleep(0.2)
        self.browser = playwright_instance().chromium.connect_over_cdp(endpoint)
        self.console: list[str] = []

    def new_page(self) -> Any:
        if self.browser is None:
            raise RuntimeError("detached: no more pages can be opened")
        return self.browser.contexts[0].new_page()

    def detach(self) -> None:
        """Disconnect Playwright; the browser and its pages keep running with no DevTools client."""
        if self.browser is not None:
            self.browser.close()  # for a CDP connection: disconnects, pages stay open
            self.browser = None

    def close(self) -> None:
        try:
            self.detach()
        except Exception:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)



def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------
# The host page: anywidget's front-end contract, minimal, over a WebSocket.
# Frames (both ways): 4-byte big-endian header length, JSON header, then the buffers back to back;
# header = {"type": "comm_open"|"comm_msg"|"comm_close", "comm_id", "data", "sizes": [buffer lengths]}.

# The page side of that framing, shared by the test host pages: pack(header, buffers) -> Uint8Array;
# unpack(buf, views) -> [header, buffers] with each buffer a DataView over ``buf`` (views) or its own ArrayBuffer copy.
FRAME_CODEC_JS = """function pack(header, buffers) {
  const views = (buffers || []).map(b => b instanceof ArrayBuffer ? new Uint8Array(b)
      : new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
  header.sizes = views.map(v => v.byteLength);
  const h = enc.encode(JSON.stringify(header));
  const out = new Uint8Array(4 + h.length + header.sizes.reduce((a, b) => a + b, 0));
  new DataView(out.buffer).setUint32(0, h.length);
  out.set(h, 4);
  let o = 4 + h.length;
  for (const v of views) { out.set(v, o); o += v.byteLength; }
  return out;
}
function unpack(buf, views = false) {
  const n = new DataView(buf).getUint32(0);
  const header = JSON.parse(dec.decode(new Uint8Array(buf, 4, n)));
  let o = 4 + n;
  const buffers = header.sizes.map(s => { const b = views ? new DataView(buf, o, s) : buf.slice(o, o + s); o += s; return b; });
  return [header, buffers];
}
"""

HOST_HTML = """<!doctype html><meta charset="utf-8"><title>webllm-widget test host</title>
<body><div id="widgets"></div><script type="module">
const enc = new TextEncoder(), dec = new TextDecoder();
const ws = new WebSocket(`ws://${location.host}/comm`);
ws.binaryType = "arraybuffer";
const models = new Map();
window.__host = { models, errors: [], opened: 0 };
""" + FRAME_CODEC_JS + """function makeModel(commId, state) {
  const listeners = new Map();
  const emit = (name, ...args) => (listeners.get(name) || []).slice().forEach(f => f(...args));
  let dirty = {};
  return {
    _state: state, _emit: emit,
    get: k => state[k],
    set: (k, v) => { state[k] = v; dirty[k] = v; emit(`change:${k}`); emit("change"); },
    save_changes: () => { const s = dirty; dirty = {};
      ws.send(pack({type: "comm_msg", comm_id: commId, data: {method: "update", state: s, buffer_paths: []}}, [])); },
    on: (name, f) => { if (!listeners.has(name)) listeners.set(name, []); listeners.get(name).push(f); },
    off: (name, f) => { if (!name) { listeners.clear(); return; }
      listeners.set(name, f ? (listeners.get(name) || []).filter(g => g !== f) : []); },
    send: (content, callbacks, buffers) => ws.send(pack(
      {type: "comm_msg", comm_id: commId, data: {method: "custom", content}}, buffers || [])),
    widget_manager: { get_model: async id => models.get(id) },
  };
}
async function open(commId, data) {
  const state = data.state;
  const model = makeModel(commId, state);
  models.set(commId, model);
  if (typeof state._esm !== "string") return;  // Layout/Style models: state only
  const url = URL.createObjectURL(new Blob([state._esm], {type: "text/javascript"}));
  let def = (await import(url)).default;
  if (typeof def === "function") def = await def();
  const signal = new AbortController().signal;
  await def.initialize?.({model, signal, experimental: {}});
  const el = document.createElement("div");
  el.id = `widget-${commId}`;
  el.className = "widget";
  document.getElementById("widgets").append(el);
  await def.render?.({model, el, signal, experimental: {}});
  window.__host.opened += 1;
}
ws.onmessage = async (ev) => {
  const [h, buffers] = unpack(ev.data, true);
  try {
    if (h.type === "comm_open") await open(h.comm_id, h.data);
    else if (h.type === "comm_msg") {
      const m = models.get(h.comm_id);
      if (!m) return;
      if (h.data.method === "update") {
        Object.assign(m._state, h.data.state);
        for (const k of Object.keys(h.data.state)) m._emit(`change:${k}`);
      } else if (h.data.method === "custom") m._emit("msg:custom", h.data.content, buffers);
    } else if (h.type === "comm_close") models.delete(h.comm_id);
  } catch (e) { window.__host.errors.push(String(e && e.stack || e)); console.error(e); }
};
ws.onopen = () => ws.send(pack({type: "hello"}, []));
</script>"""

BLANK_HTML = "<!doctype html><meta charset='utf-8'><title>blank</title><body></body>"


def _pack(header: dict, buffers: list) -> bytes:
    views = [memoryview(b).cast("B") for b in buffers]
    header = dict(header, sizes=[v.nbytes for v in views])
    h = json.dumps(header).encode()
    return b"".join([struct.pack(">I", len(h)), h, *[bytes(v) for v in views]])


def _unpack(frame: bytes) -> tuple[dict, list[memoryview]]:
    n = struct.unpack(">I", frame[:4])[0]
    header = json.loads(frame[4:4 + n])
    view, o, bufs = memoryview(frame), 4 + n, []
    for s in header.get("sizes", []):
        bufs.append(view[o:o + s])
        o += s
    return header, bufs


class HostServer:
    """Tornado on 127.0.0.1 in a thread with its own asyncio loop, which is also where widgets live."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.routes: dict[str, tuple[bytes | Path, str]] = {
            "/host.html": (HOST_HTML.encode(), "text/html"),
            "/blank.html": (BLANK_HTML.encode(), "text/html"),
        }
        self.sockets: list[Any] = []
        self.on_frame: Callable[[Any, dict, list], None] | None = None
        self.on_connect: Callable[[Any], None] | None = None
        self._thread = threading.Thread(target=self._run, name="wlw-host-loop", daemon=True)
        self._started = threading.Event()
        self.port = 0
        self._thread.start()
        self._started.wait(30)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_route(self, path: str, body: bytes | Path, content_type: str = "application/octet-stream") -> str:
        """Serve ``body`` at ``path``; returns the full URL."""
        self.routes[path] = (body, content_type)
        return self.origin + path

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        import tornado.web
        import tornado.websocket

        server = self

        class Static(tornado.web.RequestHandler):
            def get(self, path: str) -> None:
                full = "/" + path
                if full in server.routes:
                    body, ctype = server.routes[full]
                elif full.startswith("/static/") and (STATIC / full[len("/static/"):]).is_file():
                    body, ctype = STATIC / full[len("/static/"):], (
                        "text/javascript" if full.endswith(".js") else "application/octet-stream")
                else:
                    raise tornado.web.HTTPError(404)
                self.set_header("content-type", ctype)
                self.set_header("cache-control", "no-store")
                self.write(body.read_bytes() if isinstance(body, Path) else body)

        class Comm(tornado.websocket.WebSocketHandler):
            def open(self) -> None:
                server.sockets.append(self)

            def on_message(self, message: Any) -> None:
                if isinstance(message, str):
                    return
                header, bufs = _unpack(message)
                if header.get("type") == "hello":
                    if server.on_connect:
                        server.on_connect(self)
                elif server.on_frame:
                    server.on_frame(self, header, bufs)

            def on_close(self) -> None:
                if self in server.sockets:
                    server.sockets.remove(self)

        app = tornado.web.Application([(r"/comm", Comm), (r"/(.*)", Static)],
                                      websocket_max_message_size=1 << 30)
        srv = app.listen(0, address="127.0.0.1", max_body_size=1 << 30)
        self.port = next(iter(srv._sockets.values())).getsockname()[1]
        self._tornado = srv
        self._started.set()
        self.loop.run_forever()

    def run(self, coro: Awaitable[Any], timeout: float = 600) -> Any:
        """Run a coroutine on the host loop (where widgets live) and return its result."""
        fut: Future = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return fut.result(timeout)

    def call(self, fn: Callable[[], Any], timeout: float = 60) -> Any:
        """Run a plain function on the host loop."""
        async def wrap():
            return fn()
        return self.run(wrap(), timeout)

    def close(self) -> None:
        def stop():
            self._tornado.stop()
            for s in list(self.sockets):
                s.close()
            self.loop.stop()
        self.loop.call_soon_threadsafe(stop)
        self._thread.join(10)


class _BridgeComm:
    """Replaces Jupyter's comm for widgets hosted by :class:`WidgetHost` (ipywidgets calls ``create_comm``)."""

    def __init__(self, host: "WidgetHost", **kwargs: Any):
        from comm.base_comm import BaseComm

        self._base = BaseComm  # only for the shape of the API
        self.host = host
        self.comm_id = kwargs.get("comm_id") or uuid.uuid4().hex
        self.target_name = kwargs.get("target_name", "jupyter.widget")
        self._msg_callback: Callable[[dict], None] | None = None
        self._close_callback: Callable[[dict], None] | None = None
        self._closed = False
        self.host._comms[self.comm_id] = self
        self.host._emit({"type": "comm_open", "comm_id": self.comm_id, "data": kwargs.get("data") or {}},
                        list(kwargs.get("buffers") or []))

    def send(self, data: Any = None, metadata: Any = None, buffers: Any = None) -> None:
        self.host._emit({"type": "comm_msg", "comm_id": self.comm_id, "data": data}, list(buffers or []))

    def close(self, data: Any = None, metadata: Any = None, buffers: Any = None, deleting: bool = False) -> None:
        if not self._closed:
            self._closed = True
            self.host._emit({"type": "comm_close", "comm_id": self.comm_id, "data": data}, [])

    def on_msg(self, callback: Callable[[dict], None] | None) -> None:
        self._msg_callback = callback

    def on_close(self, callback: Callable[[dict], None] | None) -> None:
        self._close_callback = callback

    def handle_msg(self, msg: dict) -> None:
        if self._msg_callback:
            self._msg_callback(msg)


class WidgetHost:
    """Hosts Python widgets on :class:`HostServer`'s loop and renders them in a Chromium page.

    Widgets created while the host is active talk to the page at ``/host.html`` over the
    WebSocket instead of a Jupyter comm; everything else (traitlets, custom messages, buffers,
    the widget's own JS) is the real thing. Create widgets on the host loop (inside ``run``).
    """

    def __init__(self, server: HostServer, browser: Chromium):
        self.server, self.browser = server, browser
        self._comms: dict[str, _BridgeComm] = {}
        #: wire-schema problems of widgets closed before the host (kept for the check when the host closes)
        self.retired_problems: list[str] = []
        self._socket: Any = None
        self._backlog: list[bytes] = []
        self.page: Any = None
        server.on_frame = self._on_frame
        server.on_connect = self._on_connect

    def __enter__(self) -> "WidgetHost":
        import comm

        self._saved_create = comm.create_comm
        comm.create_comm = lambda **kw: _BridgeComm(self, **kw)
        self.open_page()
        return self

    def __exit__(self, *exc: Any) -> None:
        import comm

        comm.create_comm = self._saved_create
        if self.page is not None:
            self.page.close()
            self.page = None
        problems = self.wire_problems()
        if problems and exc[0] is None:
            raise AssertionError("messages the wire schema (webllm_widget/wire/schema.py) does not describe:\n  "
                                 + "\n  ".join(problems))

    def wire_problems(self) -> list[str]:
        """What the channels of this host's widgets saw, either way, that the wire schema does not describe."""
        import warnings

        from webllm_widget.protocol import Channel

        out: list[str] = list(self.retired_problems)
        for c in list(self._comms.values()):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # Widget.widgets: the registry there is
                widget = self._widget_of(c)
            for v in vars(widget).values() if widget is not None else ():
                if isinstance(v, Channel):
                    out += [p for p in v.wire_problems if p not in out]
        return out

    def open_page(self, init_script: str | None = None) -> Any:
        """(Re)open the host page; a reload gives a fresh page state (Cache Storage persists).

        ``init_script`` runs in the page before any of its own scripts (e.g. to take a feature away)."""
        if self.page is not None:
            self.page.close()
        self._socket = None
        self.page = self.browser.new_page()
        if init_script:
            self.page.add_init_script(init_script)
        self.page.goto(self.server.origin + "/host.html")
        self.page.wait_for_function("() => window.__host !== undefined")
        return self.page

    def reopen_widgets(self) -> None:
        """After :meth:`open_page`, show every open widget again (a new page, as after a browser reload)."""
        def reopen():
            for c in list(self._comms.values()):
                widget = self._widget_of(c)
                if widget is None:
                    continue
                from ipywidgets.widgets.widget import _remove_buffers

                state, paths, bufs = _remove_buffers(widget.get_state())
                self._emit({"type": "comm_open", "comm_id": c.comm_id,
                            "data": {"state": state, "buffer_paths": paths}}, bufs)
        self.server.call(reopen)

    def _widget_of(self, c: _BridgeComm) -> Any:
        from ipywidgets import Widget

        return Widget.widgets.get(c.comm_id) if hasattr(Widget, "widgets") else None

    def run(self, coro: Awaitable[Any], timeout: float = 600) -> Any:
        return self.server.run(coro, timeout)

    def show(self, widget: Any) -> None:
        """Widgets render on the page as soon as they are created; kept for readability in tests."""

    # -- frames --------------------------------------------------------------------------------

    def _emit(self, header: dict, buffers: list) -> None:
        frame = _pack(header, buffers)
        if self._socket is None:
            self._backlog.append(frame)
        else:
            self._socket.write_message(frame, binary=True)

    def _on_connect(self, socket: Any) -> None:
        self._socket = socket
        backlog, self._backlog = self._backlog, []
        for frame in backlog:
            socket.write_message(frame, binary=True)

    def _on_frame(self, socket: Any, header: dict, buffers: list) -> None:
        c = self._comms.get(header.get("comm_id"))
        if c is None or header.get("type") != "comm_msg":
            return
        c.handle_msg({"content": {"comm_id": c.comm_id, "data": header["data"]},
                      "buffers": buffers, "header": {}, "metadata": {}})

    def page_errors(self) -> list[str]:
        return self.page.evaluate("() => window.__host.errors")


def run_js(page: Any, body: str, arg: Any = None) -> Any:
    """Evaluate an async JS function body in ``page``; ``arg`` is available as ``arg``."""
    return page.evaluate(f"async (arg) => {{ {body} }}", arg)
