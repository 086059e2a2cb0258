"""The reliability suite's pieces: a widget host page of its own, a second file origin, model copies to damage.

``RelHost`` runs Chat widgets in a page of the session's WebGPU Chromium and reads their DOM; ``FileServer``
serves model folders in the Hugging Face layout from another loopback origin and counts requests;
``fresh`` is a fresh greedy run to compare an answer against (the tiny model's words are noise).
"""
from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from browser import HostServer, WidgetHost, _BridgeComm


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
            if "device" in Chat.class_trait_names():
                kw.setdefault("device", "webgpu")  # the WebGPU path (auto would pick F's CPU build on SwiftShader)
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

    def dom_until(self, chat: Any, expr: str, ok: Callable[[Any], bool], timeout: float = 10.0) -> Any:
        """``dom`` polled until ``ok(value)``: the kernel can see a trait before the view has drawn it."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.dom(chat, expr)
            if ok(value) or time.monotonic() > deadline:
                return value
            self.page.wait_for_timeout(100)

    def drop_engine(self) -> None:
        """End the page's shared engine (its worker and every model it holds), as a fresh page would have none:
        the next Chat starts a new one. Widgets made before keep the old engine and must not be used after."""
        self.page.evaluate("""async () => { const key = "__webllm_widget_engine__"; const p = globalThis[key];
            delete globalThis[key]; if (p) (await p).terminate(); }""")

    def seen_requests(self) -> list[str]:
        """The request log, after letting Playwright deliver pending events (sync API: only while it is called)."""
        self.page.evaluate("1")
        self.page.wait_for_timeout(200)
        return list(self.requests)

    def close(self, chat: Any) -> None:
        self.host.server.call(chat.close)

    def close_widgets(self) -> int:
        """Close every widget earlier tests left open on this host (their comms close; the page forgets their
        models), so a reload re-shows only the widgets made after; returns how many were closed."""
        def close_all() -> int:
            # what their channels saw stays checked against the wire schema when the host closes
            self.host.retired_problems += [p for p in self.host.wire_problems() if p not in self.host.retired_problems]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # Widget.widgets: the registry there is
                widgets = [w for w in map(self.host._widget_of, list(self.host._comms.values())) if w is not None]
            for w in widgets:
                w.close()
            return len(widgets)
        return self.host.server.call(close_all)


async def fresh(chat, messages: list[dict], **kw) -> str:
    """A fresh greedy run of ``messages``: not a continuation of the engine's conversation, so web-llm
    drops its KV cache and prefills ``messages`` from scratch."""
    r = await chat.complete(messages, temperature=0, **kw)
    return r["choices"][0]["message"]["content"]


class FileServer:
    """A second loopback origin serving model folders in the Hugging Face layout, counting every request.

    ``add(prefix, folder, skip=())`` serves ``folder``'s files at ``/<prefix>/resolve/main/<name>``;
    ``hits(substr)`` counts requests whose path contains ``substr``. CORS is open (the page's origin differs).
    """

    def __init__(self) -> None:
        import http.server
        import threading

        self.folders: dict[str, tuple[Path, set[str]]] = {}
        self.log: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.log.append(self.path)
                parts = self.path.split("?")[0].strip("/").split("/")
                entry = server.folders.get(parts[0]) if parts else None
                f = None
                if entry and len(parts) == 4 and parts[1:3] == ["resolve", "main"] and parts[3] not in entry[1]:
                    f = entry[0] / parts[3]
                if f is None or not f.is_file():
                    self.send_response(404)
                    self.send_header("access-control-allow-origin", "*")
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                data = f.read_bytes()
                self.send_response(200)
                self.send_header("access-control-allow-origin", "*")
                self.send_header("content-type", "application/octet-stream")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, prefix: str, folder: Path, skip: tuple[str, ...] = ()) -> str:
        self.folders[prefix] = (Path(folder), set(skip))
        return f"{self.origin}/{prefix}"

    def hits(self, substr: str) -> int:
        return sum(1 for p in self.log if substr in p)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
