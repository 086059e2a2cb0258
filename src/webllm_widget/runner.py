"""Headless runner: the page's engine (web-llm in a Web Worker) driven from Python in headless Chromium.

``webllm-widget chat "What is the capital of France?"`` runs the same engine bundle the Chat widget
uses, on WebGPU, with the built-in model: a progress bar while it loads, the answer streamed to the
terminal, then tokens per second. With no prompt it is an interactive terminal chat.

Model files travel to the page the way they do in the notebook: content-addressed (sha256), copied once
into the page's Cache Storage; the browser profile is kept under the cache dir, so the next run sends
no model bytes.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .cache import cache_dir, sha256_file
from .errors import BadArtifact, BadModel, WebLLMWidgetError, from_page

STATIC = Path(__file__).parent / "static"
RUNNER_HTML = b"""<!doctype html><meta charset="utf-8"><title>webllm-widget runner</title>
<script type="module" src="/runner.js"></script>"""


def _static(name: str) -> Path:
    p = STATIC / name
    if not p.exists():
        raise WebLLMWidgetError(f"{p} is missing: build the page bundles with `npm ci && npm run build` in js/ "
                                "(a wheel from PyPI carries them)", code="bad-artifact")
    return p


_HASHES: dict[tuple[str, int, int], str] = {}


def _file_sha(p: Path) -> str:
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(p)
    return _HASHES[key]


@dataclass
class FolderModel:
    """A model folder in web-llm's layout, described by content: what the page's engine loads."""

    folder: Path
    spec: dict
    paths: dict[str, Path] = field(repr=False)  # sha256 -> file

    @property
    def total_bytes(self) -> int:
        return sum(f["size"] for f in self.spec["files"])


def folder_model(folder: str | os.PathLike, model_id: str | None = None) -> FolderModel:
    """Describe a model folder (mlc-chat-config.json, tokenizer, tensor-cache.json, shards, one .wasm) by hashes.

    The spec's ``key`` hashes the whole manifest, so a rebuilt folder gets new URLs in the page's cache.
    """
    folder = Path(folder)
    if not (folder / "mlc-chat-config.json").exists():
        raise BadModel(f"{folder} is not a model folder: mlc-chat-config.json is missing")
    libs = sorted(folder.glob("*.wasm"))
    if len(libs) != 1:
        raise BadModel(f"{folder} must hold exactly one model library (.wasm), found {len(libs)}")
    # A folder built by compile.pipeline lists every file's sha256 in manifest.json: no need to re-read them.
    manifest = {}
    if (folder / "manifest.json").exists():
        try:
            manifest = json.loads((folder / "manifest.json").read_text()).get("files", {})
        except (ValueError, OSError):
            manifest = {}
    _check_folder_files(folder, manifest)
    files, paths = [], {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith(".") or p.name == "manifest.json":
            continue
        size = p.stat().st_size
        known = manifest.get(p.name) or {}
        sha = known.get("sha256") if known.get("size") == size else None
        sha = sha or _file_sha(p)
        files.append({"name": p.name, "sha256": sha, "size": size})
        paths[sha] = p
    key = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:32]
    spec = {"id": model_id or folder.name, "files": files, "key": key, "lib": libs[0].name}
    return FolderModel(folder, spec, paths)


def _check_folder_files(folder: Path, manifest: dict) -> None:
    """Name a missing or truncated file before anything is sent to the page (web-llm would only say
    "Request failed" for a URL it cannot find, and fail later on a short shard)."""
    # Files the folder's own configs name must be there.
    needed: dict[str, int | None] = {}
    try:
        cfg = json.loads((folder / "mlc-chat-config.json").read_text())
    except (ValueError, OSError) as e:
        raise BadArtifact(f"{folder / 'mlc-chat-config.json'} is not valid JSON ({e}): rebuild the model folder",
                          detail={"file": "mlc-chat-config.json"}) from None
    for name in cfg.get("tokenizer_files") or []:
        needed.setdefault(str(name), None)
    cache_json = next((n for n in ("tensor-cache.json", "ndarray-cache.json") if (folder / n).exists()), None)
    if cache_json is None:
        raise BadModel(f"{folder} is not a complete model folder: tensor-cache.json is missing; rebuild it",
                       detail={"file": "tensor-cache.json"})
    try:
        records = json.loads((folder / cache_json).read_text()).get("records") or []
    except (ValueError, OSError) as e:
        raise BadArtifact(f"{folder / cache_json} is not valid JSON ({e}): rebuild the model folder",
                          detail={"file": cache_json}) from None
    for r in records:
        if r.get("dataPath"):
            needed[str(r["dataPath"])] = r.get("nbytes")
    for name, entry in manifest.items():
        needed.setdefault(name, None)
    for name, nbytes in needed.items():
        f = folder / name
        if not f.is_file():
            raise BadModel(f"{folder} is missing {name} (named by the folder's configs or manifest): "
                           "rebuild the model folder", detail={"file": name})
        size = f.stat().st_size
        expect = (manifest.get(name) or {}).get("size", nbytes)
        if expect is not None and size != int(expect):
            raise BadArtifact(f"{name} in {folder} has {size} bytes, the folder says {int(expect)}: the file is "
                              "truncated or was replaced; rebuild the model folder", detail={"file": name})


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

        from .browser import PageServer, launch_webgpu

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


# ---- terminal front end ------------------------------------------------------------------------------

def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


class _Terminal:
    """Prints load progress as a tqdm bar and tokens as they come."""

    def __init__(self, out=sys.stdout):
        self.out = out
        self.bar = None
        self.phase = None

    def __call__(self, ev: dict) -> None:
        t = ev.get("type")
        if t == "progress":
            from tqdm import tqdm

            phase = ev.get("phase")
            if phase != self.phase:
                self.close_bar()
                self.phase = phase
                desc = {"install": "copy to page", "fetch": "download", "load": "load to GPU",
                        "compile": "compile shaders", "done": "ready"}.get(phase, phase)
                self.bar = tqdm(total=1000, desc=f"{desc:>15}", file=sys.stderr, leave=False,
                                bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
            if self.bar is not None:
                self.bar.n = int(1000 * float(ev.get("progress") or 0))
                post = ""
                if ev.get("bytes_total"):
                    post = f"{_fmt_bytes(ev.get('bytes_done') or 0)}/{_fmt_bytes(ev['bytes_total'])}"
                if ev.get("eta_s") is not None:
                    post += f" {ev['eta_s']:.0f}s left"
                self.bar.set_postfix_str(post.strip() or str(ev.get("text", ""))[:40], refresh=True)
        elif t == "delta":
            self.out.write(ev["text"])
            self.out.flush()
        elif t == "pageerror":
            print(f"\n[page error] {ev.get('text')}", file=sys.stderr)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _resolve_model(model: str | None, device: str = "auto") -> FolderModel | dict:
    """The spec the page loads: a folder (both builds for ``auto``, see devices.py) or an MLC prebuilt id."""
    from .devices import model_spec

    spec, paths = model_spec(model, device)
    if spec.get("prebuilt"):  # the page fetches it (needs internet)
        return spec
    return FolderModel(Path(str(model or "default")), spec, paths)


def _settings(args) -> dict:
    s = {"max_tokens": 256}  # a default bound: software WebGPU decodes a few tokens a second
    for k in ("temperature", "top_p", "max_tokens", "seed"):
        v = getattr(args, k, None)
        if v is not None:
            s[k] = v
    return s


async def _chat(args) -> int:
    term = _Terminal()
    model = _resolve_model(getattr(args, "model", None), getattr(args, "device", None) or "auto")
    system = getattr(args, "system", None)
    async with HeadlessEngine(fresh_profile=getattr(args, "fresh_profile", False),
                              headless=not getattr(args, "show_browser", False), on_event=term) as eng:
        a = eng.adapter
        print(f"GPU: {a.get('vendor')} {a.get('architecture')} {a.get('description') or ''}"
              f"{' (software fallback adapter)' if a.get('is_fallback') else ''}", file=sys.stderr)
        info = await eng.load(model)
        term.close_bar()
        sent = f", {_fmt_bytes(info['bytes_installed'])} copied to the page" if info.get("bytes_installed") else \
            ", from the page's cache"
        print(f"loaded {info['model']} in {info['load_s']:.1f} s{sent}", file=sys.stderr)
        if info.get("device"):  # which engine runs it (device="auto" picks the CPU on a software adapter)
            print(f"running on {'the CPU (WebAssembly SIMD)' if info['device'] == 'cpu' else 'WebGPU'}: "
                  f"{info.get('device_reason', '')}", file=sys.stderr)
        history: list[dict] = [{"role": "system", "content": system}] if system else []

        async def turn(prompt: str) -> None:
            history.append({"role": "user", "content": prompt})
            task = asyncio.ensure_future(eng.generate(history, **_settings(args)))
            try:
                r = await asyncio.shield(task)
            except (KeyboardInterrupt, asyncio.CancelledError):
                await eng.stop()
                r = await task
            history.append({"role": "assistant", "content": r["text"]})
            u = r["usage"]
            pre, dec = u.get("prefill_tokens_per_s"), u.get("decode_tokens_per_s")
            print(f"\n[{u['prompt_tokens']} prompt tokens at {pre or 0:.2f} tok/s, "
                  f"{u['completion_tokens']} generated at {dec or 0:.2f} tok/s"
                  f"{', stopped' if r['finish_reason'] == 'abort' else ''}]", file=sys.stderr)

        if args.prompt:
            await turn(" ".join(args.prompt) if isinstance(args.prompt, list) else args.prompt)
            return 0
        print("Interactive chat: an empty line or Ctrl-D ends it; Ctrl-C stops an answer.", file=sys.stderr)
        loop = asyncio.get_running_loop()
        while True:
            try:
                line = await loop.run_in_executor(None, input, "> ")
            except EOFError:
                return 0
            if not line.strip():
                return 0
            await turn(line)


def cli_chat(args) -> int:
    """Entry point for ``webllm-widget chat [PROMPT] [--model M] [--system S] [--temperature T] ...``.

    ``args`` is an argparse namespace; attributes it may hold: ``prompt`` (str or list, may be empty),
    ``model`` (folder or MLC prebuilt id), ``system``, ``temperature``, ``top_p``, ``max_tokens``, ``seed``,
    ``fresh_profile``, ``show_browser``. Returns the process exit status.
    """
    try:
        return asyncio.run(_chat(args))
    except WebLLMWidgetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def add_chat_arguments(parser) -> None:
    """The ``chat`` subcommand's options (cli.py calls this so the options live next to their use)."""
    parser.add_argument("prompt", nargs="*", help="the question; none starts an interactive chat")
    parser.add_argument("--model", help="a model folder, or an MLC prebuilt id (online); default: built-in SmolLM2")
    parser.add_argument("--system", help="system prompt")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top-p", dest="top_p", type=float)
    parser.add_argument("--max-tokens", dest="max_tokens", type=int, default=256)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--fresh-profile", action="store_true", help="use a new browser profile (empty cache)")
    parser.add_argument("--show-browser", action="store_true", help="run Chromium with a window")
