"""``webllm-widget chat``: the engine in headless Chromium as a terminal chat.

``webllm-widget chat "What is the capital of France?"`` runs the built-in model on WebGPU (or the page's
CPU, see models/devices.py): a progress bar while it loads, the answer streamed to the terminal, then
tokens per second. With no prompt it is an interactive terminal chat.
"""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from .._aio import run as run_async
from ..errors import WebLLMWidgetError
from ..models.folder import FolderModel
from .engine import HeadlessEngine


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


class _Terminal:
    """Prints load progress as a tqdm bar and tokens as they come."""

    def __init__(self, out=None):
        self.out = out or sys.stdout  # looked up when the chat starts (a redirected stdout included)
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
    from ..models.devices import model_spec

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
            print(f"running on {'the CPU (WebAssembly ' + ('relaxed SIMD' if info.get('cpu_build') == 'relaxed-simd' else 'SIMD128') + ')' if info['device'] == 'cpu' else 'WebGPU'}: "
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
    """Run ``webllm-widget chat`` (its options are defined in cli.py).

    ``args`` is an argparse namespace; attributes it may hold: ``prompt`` (str or list, may be empty),
    ``model`` (folder or MLC prebuilt id), ``system``, ``temperature``, ``top_p``, ``max_tokens``, ``seed``,
    ``fresh_profile``, ``show_browser``. Returns the process exit status.
    """
    try:
        return run_async(_chat(args))  # asyncio.run refuses a thread whose loop runs (Jupyter, Playwright)
    except WebLLMWidgetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
