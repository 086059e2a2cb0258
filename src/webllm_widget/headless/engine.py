"""The page's engine (web-llm in a Web Worker) driven from Python in headless Chromium.

It runs the same engine bundle the Chat widget uses. Model files travel to the page the way they do in
the notebook: content-addressed (sha256), copied once into the page's Cache Storage; the browser profile
is kept under the cache dir, so the next run sends no model bytes.

    async with HeadlessEngine(on_event=print) as eng:
        await eng.load(folder_model(path))
        reply = await eng.generate([{"role": "user", "content": "Hi"}], max_tokens=32)
"""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Callable

from ..cache import cache_dir
from ..errors import WebLLMWidgetError, from_page
from ..models.folder import FolderModel

STATIC = Path(__file__).parent.parent / "static"
RUNNER_HTML = b"""<!doctype html><meta charset="utf-8"><title>webllm-widget runner</title>
<script type="module" src="/runner.js"></script>"""


def _static(name: str) -> Path:
    p = STATIC / name
    if not p.exists():
        raise WebLLMWidgetError(f"{p} is missing: build the page bundles with `npm ci && npm run build` in js/ "
                                "(a wheel from PyPI carries them)", code="bad-artifact")
    return p


def default_profile_dir() -> Path:
    return cache_dir() / "runner-profile"


class HeadlessEngine:
    """The engine in a headless Chromium page. Use as ``async with HeadlessEngine() as eng: ...``.

    ``on_event`` receives the page's progress and token events (dicts with ``type``).
    """

    def __init__(self, *, profile_dir: str | os.PathLike | None = None, fresh_profile: bool = False,
                 headless: bool = True, on_event: Callable[[dict], None] | None = None):
        self.profile_dir = None if fresh_profile else Path(profile_dir or default_profile_dir())
        self.headless = headless
        self.on_event = on_event
        self.blobs: dict[str, Path] = {}
        #: Bytes of model files the page fetched from this process (0 when its cache held them all).
        self.model_bytes_sent = 0
        self._stack = None
        self.page = None
        self.adapter: dict = {}
        self.server = None

    def _route(self, path: str):
        if path in ("/", "/index.html"):
            return RUNNER_HTML, "text/html"
        if path == "/runner.js":
            return _static("runner.js"), "text/javascript"
        if path == "/engine_worker.js":
            return _static("engine_worker.js"), "text/javascript"
        if path.startswith("/blob/"):
            p = self.blobs.get(path[len("/blob/"):])
            if p is None:
                return None
            self.model_bytes_sent += p.stat().st_size
            return p, "application/octet-stream"
        return None

    async def __aenter__(self) -> "HeadlessEngine":
        import contextlib

        from ..browser import PageServer, launch_webgpu

        self._stack = contextlib.AsyncExitStack()
        self.server = self._stack.enter_context(PageServer(self._route))
        if self.profile_dir:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
        browser = await self._stack.enter_async_context(
            launch_webgpu(self.server, profile_dir=self.profile_dir, headless=self.headless))
        self.adapter = browser.adapter
        page = browser.context.pages[0]
        ready = asyncio.get_running_loop().create_future()

        def emit(_source, event):
            if event.get("type") == "runner-ready" and not ready.done():
                ready.set_result(True)
            elif self.on_event:
                self.on_event(event)

        await page.expose_binding("__emit", emit)
        page.on("pageerror", lambda e: self.on_event and self.on_event({"type": "pageerror", "text": str(e)}))
        await page.goto(f"{self.server.origin}/")
        await asyncio.wait_for(ready, 60)
        self.page = page
        return self

    async def __aexit__(self, *exc) -> None:
        if self._stack:
            await self._stack.aclose()

    async def _call(self, expr: str, *args: Any) -> Any:
        r = await self.page.evaluate(expr, list(args) if len(args) != 1 else args[0])
        if isinstance(r, dict) and "error" in r and isinstance(r["error"], dict):
            raise from_page(r["error"])
        return r

    async def load(self, model: FolderModel | dict) -> dict:
        """Load a model folder (or an MLC prebuilt spec dict such as ``{"id": ..., "prebuilt": True}``)."""
        spec = model.spec if isinstance(model, FolderModel) else model
        if isinstance(model, FolderModel):
            self.blobs.update(model.paths)
        return await self._call("(s) => webllmRunner.load(s)", spec)

    async def generate(self, messages: list[dict], **settings: Any) -> dict:
        """Generate the assistant's reply; tokens arrive as ``{"type": "delta"}`` events meanwhile."""
        return await self._call("([m, s]) => webllmRunner.generate(m, s)", messages, settings)

    async def stop(self) -> None:
        await self.page.evaluate("webllmRunner.stop()")

    async def reset(self) -> None:
        await self._call("() => webllmRunner.reset()")
