"""The Chat widget: an LLM chat in a notebook cell, running in the browser page on WebGPU, driven from Python.

    from webllm_widget import Chat
    chat = Chat()                       # built-in SmolLM2-135M-Instruct; loads as soon as the page shows it
    chat                                # display it
    answer = await chat.ask("What is the capital of France?")
    async for token in chat.stream("Tell me more"):
        print(token, end="")
    h = chat.send("And of Italy?", on_token=print, on_done=lambda text: ...)   # returns at once
    chat.stop(); chat.reset(); chat.load("Llama-3.2-1B-Instruct-q4f32_1-MLC")
    reply = await chat.complete(messages=[{"role": "user", "content": "Hi"}], temperature=0)

Why ``await``: the model runs in the browser page, and the page answers through the kernel's message
loop. A notebook cell that *blocks* (``time.sleep``, a ``while not done`` loop, ``.result()``) holds
that loop, so the page's answer is never read and the cell waits forever: Jupyter delivers widget
messages to the kernel only between cells or while a cell yields to the event loop. ``await chat.ask(...)``
and ``async for t in chat.stream(...)`` yield (IPython runs top-level ``await`` on the kernel's loop), so
tokens arrive while the cell runs. Where a cell must not wait at all, ``chat.send(...)`` returns a handle
at once and calls ``on_token``/``on_done`` as the answer streams in.

Tokens travel as custom messages; the ``messages`` and ``stats`` traitlets are written when an answer
completes (a page holds back traitlet traffic while a cell runs, custom messages it does not).
"""
from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import anywidget
import traitlets as t

from .artifacts import Blob, BlobSender, static_blob
from .errors import Aborted, BadModel, WebLLMWidgetError
from .protocol import Channel, _settle, new_id

_STATIC = Path(__file__).with_name("static")

#: Shown in the model picker besides the built-in model (online: the page fetches them from Hugging Face).
PICKER_PREBUILT = [
    "SmolLM2-360M-Instruct-q4f32_1-MLC",
    "Qwen2.5-0.5B-Instruct-q4f32_1-MLC",
    "Llama-3.2-1B-Instruct-q4f32_1-MLC",
    "Qwen2.5-1.5B-Instruct-q4f32_1-MLC",
    "Phi-3.5-mini-instruct-q4f32_1-MLC",
]

#: Environment variable naming the model ``Chat()`` loads when none is given.
MODEL_ENV = "WEBLLM_WIDGET_MODEL"

#: Generation settings sent with each request (unset ones keep the model's defaults).
SETTINGS = ("temperature", "top_p", "max_tokens", "seed", "stop", "frequency_penalty", "presence_penalty",
            "repetition_penalty")
#: Settings whose traitlet has another name.
_TRAIT_OF = {"stop": "stop_sequences"}

#: Seconds an answer may take (software WebGPU decodes a few tokens a second).
ANSWER_TIMEOUT = 3600.0
LOAD_TIMEOUT = 3600.0


class ChatHandle:
    """One answer in flight, returned by :meth:`Chat.send`.

    ``await handle`` gives the full text; ``handle.text`` is what arrived so far; ``handle.done()``
    says whether it finished; ``handle.stop()`` ends it early (the partial answer is kept).
    ``handle.result`` is the ``done`` payload (``text``, ``finish_reason``, ``usage``) once finished.
    """

    def __init__(self, chat: "Chat", prompt: str | None, on_token: Callable[[str], Any] | None,
                 on_done: Callable[[str], Any] | None):
        self.chat = chat
        self.prompt = prompt
        self.id = new_id("ask")
        self.text = ""
        self.tokens: list[str] = []
        self.result: dict | None = None
        self.error: BaseException | None = None
        self.t_sent = time.perf_counter()
        self.t_first: float | None = None
        self._on_token = on_token
        self._on_done = on_done
        self._done = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._queues: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []

    def done(self) -> bool:
        return self._done

    def stop(self) -> None:
        """Stop this answer; it finishes with ``finish_reason == "abort"`` and the text so far."""
        if self._done:
            return
        if self in self.chat._waiting:  # queued behind another answer: never sent to the page
            self.chat._waiting.remove(self)
            self.chat._handles.pop(self.id, None)
            self._finish({"text": "", "finish_reason": "abort", "usage": {}}, None)
            return
        self.chat._ch.send("stop", {"target": self.id})

    def _token(self, text: str) -> None:
        if self.t_first is None:
            self.t_first = time.perf_counter()
        self.text += text
        self.tokens.append(text)
        for loop, q in self._queues:
            loop.call_soon_threadsafe(q.put_nowait, text)
        if self._on_token:
            self._on_token(text)

    def _finish(self, result: dict | None, error: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        self.result, self.error = result, error
        if result is not None:
            self.text = str(result.get("text", self.text))
        for loop, q in self._queues:
            loop.call_soon_threadsafe(q.put_nowait, None)
        for loop, fut in self._waiters:
            loop.call_soon_threadsafe(_settle, fut, self.text, error)
        self._waiters = []
        if self._on_done and error is None:
            self._on_done(self.text)

    async def wait(self) -> str:
        if not self._done:
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            self._waiters.append((loop, fut))
            await fut
        if self.error is not None:
            raise self.error
        return self.text

    def __await__(self):
        return self.wait().__await__()

    def _queue(self) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        for tok in self.tokens:  # tokens that came before the iteration started
            q.put_nowait(tok)
        if self._done:
            q.put_nowait(None)
        else:
            self._queues.append((loop, q))
        return q

    def __repr__(self) -> str:
        state = "done" if self._done else "running"
        return f"<ChatHandle {self.id} {state}: {self.text[:60]!r}>"


class Chat(anywidget.AnyWidget):
    """A chat with a language model that runs in the notebook's browser page, on the user's GPU (WebGPU).

    ``model``: ``"default"`` (built-in SmolLM2-135M-Instruct, offline; ``$WEBLLM_WIDGET_MODEL`` overrides it), a model folder, a GGUF file or
    Hugging Face folder (compiled first), or an MLC prebuilt id (the page downloads it). The model
    loads when the widget is first shown; ``await chat.ready()`` waits for it.

    Example::

        chat = Chat(system_prompt="Answer in one sentence.", temperature=0)
        chat
        await chat.ask("What is the capital of France?")
    """

    _esm = _STATIC / "chat_widget.js"

    model = t.Unicode("default", help="model id, folder or file; see class doc").tag(sync=True)
    models = t.List(t.Dict(), help="choices offered by the model picker").tag(sync=True)
    status = t.Unicode("idle", help="idle, loading, ready, generating or error").tag(sync=True)
    progress = t.Dict(help="last load progress: progress (0..1), phase, bytes_done, bytes_total, eta_s").tag(sync=True)
    messages = t.List(t.Dict(), help="the conversation: [{'role', 'content'}], user and assistant turns").tag(sync=True)
    system_prompt = t.Unicode("", help="system message sent before the conversation").tag(sync=True)
    temperature = t.Float(None, allow_none=True).tag(sync=True)
    top_p = t.Float(None, allow_none=True).tag(sync=True)
    max_tokens = t.Int(512, allow_none=True).tag(sync=True)
    seed = t.Int(None, allow_none=True).tag(sync=True)
    # Named so because `stop()` is the method that ends an answer; sent to the engine as `stop`.
    stop_sequences = t.List(t.Unicode(), help="strings that end an answer").tag(sync=True)
    frequency_penalty = t.Float(None, allow_none=True).tag(sync=True)
    presence_penalty = t.Float(None, allow_none=True).tag(sync=True)
    repetition_penalty = t.Float(None, allow_none=True).tag(sync=True)
    stats = t.Dict(help="numbers of the last answer: tokens, prefill/decode tok/s, latency").tag(sync=True)
    gpu = t.Unicode("", help="the WebGPU adapter the page uses (or the CPU, and why)").tag(sync=True)
    device = t.Enum(("auto", "webgpu", "cpu"), "auto",
                    help="where the model runs: 'auto' (WebGPU on a hardware GPU, else the page's CPU), "
                         "'webgpu' or 'cpu'").tag(sync=True)
    backend = t.Dict(help="what runs the model: {'device': 'webgpu' | 'cpu', 'reason': why, "
                     "'schedule': the WebGPU library's kernel schedule ('fallback' on software adapters)}").tag(sync=True)
    error = t.Dict(help="last error: {'code', 'message'}; empty when none").tag(sync=True)
    # Names this widget's state in the page (anywidget gives each view a different model proxy).
    _page_key = t.Unicode().tag(sync=True)

    @t.default("_page_key")
    def _new_page_key(self) -> str:
        return uuid.uuid4().hex
    context_overflow = t.Enum(("error", "drop-oldest"), "error",
                              help="when the conversation outgrows the model's context window: raise "
                                   "ContextWindowExceeded ('error'), or leave the oldest turns out of what the "
                                   "model sees ('drop-oldest'; `messages` keeps them all)").tag(sync=True)

    def __init__(self, model: str | Path | None = None, *, autoload: bool = True, **kwargs: Any):
        if model is None:
            # The environment may name the model every Chat() uses (e.g. a shared team folder, or CI).
            model = os.environ.get(MODEL_ENV) or "default"
        kwargs.setdefault("models", self._picker_models(model))
        super().__init__(model=str(model), **kwargs)
        self._ch = Channel(self)
        self._blobs = BlobSender(self._ch)
        self._handles: dict[str, ChatHandle] = {}
        self._running: ChatHandle | None = None
        self._waiting: list[ChatHandle] = []  # asked while another answer ran: started in order
        self._load_reply = None
        self._load_info: dict | None = None
        self._loaded: str | None = None
        self._loading_model = False
        self._ch.on_ready(self._on_ready)
        self._ch.on("done", self._on_page_done)
        self._ch.on("error", self._on_page_notice)
        self._ch.on("call", self._on_page_call)
        self.observe(self._on_model_trait, "model")
        self.observe(self._on_model_trait, "device")
        if autoload:
            self.load()

    # ---- loading ------------------------------------------------------------------------------------

    @staticmethod
    def _picker_models(model: Any) -> list[dict]:
        opts = [{"id": "default", "label": "SmolLM2-135M-Instruct (built-in, offline)"}]
        if model is not None and str(model) != "default":
            opts.append({"id": str(model), "label": Path(str(model)).name or str(model)})
        opts += [{"id": m, "label": f"{m} (download)"} for m in PICKER_PREBUILT if m != str(model)]
        return opts

    def _spec(self, model: str) -> dict:
        """What the page's engine needs to load ``model``; local files are offered as blobs."""
        from .devices import model_spec, spec_files

        # device="auto": both builds are offered (only the one the page picks travels); see devices.py.
        spec, paths = model_spec(model, self.device)
        for f in spec_files(spec):
            self._blobs.offer(Blob.from_path(paths[f["sha256"]], name=f["name"], sha256=f["sha256"]))
        return spec

    def load(self, model: str | Path | None = None) -> "_Awaitable":
        """Load ``model`` (default: the ``model`` traitlet) in the page. Non-blocking; ``await`` it for the
        load report (``model``, ``gpu``, ``load_s``, ``bytes_installed``)."""
        if model is not None and str(model) != self.model:
            self._loading_model = True
            try:
                self.model = str(model)
            finally:
                self._loading_model = False
        try:
            spec = self._spec(self.model)
        except WebLLMWidgetError as e:
            self._set_error(e, status="error")
            self._ch.notify_error(e)  # detected in the kernel: show it in the widget too
            raise
        engine = self._blobs.offer(static_blob("engine_worker.js"))
        self.status = "loading"
        self.error = {}
        self.progress = {"progress": 0.0, "phase": "install"}
        self._load_info = None
        reply = self._ch.request("load", {"engine": engine, "model": spec}, on_event=self._on_load_event,
                                 timeout=LOAD_TIMEOUT)
        self._load_reply = reply
        reply.add_done_callback(lambda r: self._on_loaded(r, spec))
        return _Awaitable(self._wait_load(reply))

    def _on_load_event(self, msg: dict, _buffers: list) -> None:
        if msg.get("kind") == "progress":
            self.progress = {k: v for k, v in msg.items() if k not in ("v", "kind", "id")}

    def _on_loaded(self, reply, spec: dict) -> None:
        if reply is not self._load_reply:
            return  # a later load replaced this one
        err = reply.exception()
        if err is not None:
            if getattr(err, "code", "") == "page-reloaded":
                return  # _on_ready sends the load again
            self._set_error(err, status="error")
            return
        msg, _ = reply.result()
        self._load_info = {k: v for k, v in msg.items() if k not in ("v", "kind", "id")}
        self._loaded = spec["id"]
        g = msg.get("gpu") or {}
        name = g.get("description") or " ".join(x for x in (g.get("vendor"), g.get("architecture")) if x)
        self.backend = {"device": msg.get("device") or "webgpu", "reason": msg.get("device_reason") or "",
                        "schedule": msg.get("schedule")}
        if self.backend["device"] == "cpu":
            self.gpu = f"CPU (WebAssembly SIMD) — {self.backend['reason']}"
        else:
            self.gpu = f"{name} (software)" if g.get("is_fallback") else name
            if msg.get("schedule") == "fallback":
                self.gpu += " — kernels for software adapters"
        self.progress = {"progress": 1.0, "phase": "done", "load_s": msg.get("load_s"),
                         "bytes_installed": msg.get("bytes_installed")}
        self.status = "ready"

    async def _wait_load(self, reply) -> dict:
        while True:
            try:
                await reply
            except WebLLMWidgetError as e:
                if e.code == "page-reloaded" and self._load_reply is not reply:
                    reply = self._load_reply  # the page reloaded: wait for the load sent to the new page
                    continue
                raise
            return dict(self._load_info or {})

    async def ready(self, timeout: float | None = None) -> dict:
        """Wait until the model is loaded in the page; returns the load report. Raises the load's error."""
        if self._load_reply is None:
            raise BadModel("nothing is loading: call chat.load(model) first")
        return await asyncio.wait_for(self._wait_load(self._load_reply), timeout)

    @property
    def bytes_sent(self) -> int:
        """Blob bytes (engine bundle, model files) this widget sent to the page so far."""
        return self._blobs.bytes_sent

    def _on_model_trait(self, change: dict) -> None:
        # The page's model picker (or `chat.model = ...`) changed the model: load it.
        if not self._loading_model and change["new"] != change["old"]:
            try:
                self.load()
            except WebLLMWidgetError:
                pass  # shown in the widget through `error`

    def _on_ready(self, page: dict) -> None:
        if self._ch.ready_count > 1 and self._load_reply is not None:
            # A reloaded page knows nothing: load again (from its Cache Storage, no model bytes sent).
            for h in list(self._handles.values()):
                h._finish(None, WebLLMWidgetError("the page was reloaded during this answer", code="page-reloaded"))
            self._handles.clear()
            self._waiting.clear()
            self._running = None
            self.load()

    # ---- asking -------------------------------------------------------------------------------------

    @t.validate("messages")
    def _valid_messages(self, proposal: dict) -> list:
        return _clean_messages(proposal["value"])

    @t.validate("system_prompt")
    def _valid_system_prompt(self, proposal: dict) -> str:
        return clean_text(proposal["value"])

    def _settings(self, overrides: dict) -> dict:
        s = {k: getattr(self, _TRAIT_OF.get(k, k)) for k in SETTINGS}
        s.update(overrides)
        unknown = set(overrides) - set(SETTINGS)
        if unknown:
            raise TypeError(f"unknown generation setting(s): {', '.join(sorted(unknown))}; known: {', '.join(SETTINGS)}")
        return {k: v for k, v in s.items() if v is not None and v != []}

    def _history(self, prompt: str) -> list[dict]:
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        msgs += [{"role": m["role"], "content": m["content"]} for m in self.messages if m.get("role") != "system"]
        msgs.append({"role": "user", "content": prompt})
        return msgs

    def send(self, prompt: str, *, on_token: Callable[[str], Any] | None = None,
             on_done: Callable[[str], Any] | None = None, buffers: Any = None, **settings: Any) -> ChatHandle:
        """Ask without waiting: returns a :class:`ChatHandle` at once; ``on_token(text)`` sees each piece,
        ``on_done(full_text)`` the end. The turn is added to ``messages`` when it completes."""
        if not isinstance(prompt, str):
            # ipywidgets' own Widget.send(content, buffers) (a custom comm message) shares this name.
            return super().send(prompt, buffers=buffers)
        prompt = clean_text(prompt)
        return self._submit(prompt, lambda: self._history(prompt), self._settings(settings), on_token, on_done,
                            record=True)

    def _submit(self, user: str | None, messages: list[dict] | Callable[[], list[dict]], settings: dict, on_token,
                on_done, record: bool) -> ChatHandle:
        """Start an answer, or queue it behind the one running (answers never interleave; they run in the order
        asked). ``messages`` may be a function: a queued turn sees the turns answered before it."""
        h = ChatHandle(self, user, on_token, on_done)
        h._messages, h._settings, h._record = messages, settings, record
        h.dropped_turns = 0
        self._handles[h.id] = h
        if self._running is not None and not self._running.done():
            self._waiting.append(h)
        else:
            self._start(h)
        return h

    def _start(self, h: ChatHandle) -> None:
        self._running = h

        def go(_reply=None) -> None:
            if _reply is not None and _reply.exception() is not None:
                self._handles.pop(h.id, None)
                if self._running is h:
                    self._running = None
                h._finish(None, _reply.exception())
                self._next()
                return
            if callable(h._messages):
                h._messages = h._messages()
            self._ask(h)

        if self._load_reply is None:
            self._running = None
            self._handles.pop(h.id, None)
            h._finish(None, BadModel("no model is loading or loaded: call chat.load(model)"))
            self._next()
        elif not self._load_reply.done():
            self._load_reply.add_done_callback(go)  # ask once the model is in
        else:
            go(self._load_reply)

    def _ask(self, h: ChatHandle) -> None:
        self.status = "generating"
        reply = self._ch.request("ask", {"messages": h._messages, "settings": h._settings, "user": h.prompt or "",
                                         "record": h._record}, id=h.id, timeout=ANSWER_TIMEOUT,
                                 on_event=lambda m, b: h._token(str(m.get("text", "")))
                                 if m.get("kind") == "token" else None)
        reply.add_done_callback(lambda r: self._on_answer(h, r, h._record))

    def _next(self) -> None:
        while self._waiting and (self._running is None or self._running.done()):
            h = self._waiting.pop(0)
            if not h.done():
                self._start(h)

    def _on_answer(self, h: ChatHandle, reply, record: bool) -> None:
        err = reply.exception()
        if (err is not None and getattr(err, "code", "") == "context-overflow"
                and self.context_overflow == "drop-oldest" and not h.tokens):
            shorter = _drop_oldest_turn(h._messages)
            if shorter is not None:  # ask again without the oldest turn (web-llm re-prefills the shorter history)
                users = lambda ms: sum(1 for m in ms if m.get("role") == "user")  # noqa: E731
                h.dropped_turns += users(h._messages) - users(shorter)
                h._messages = shorter
                self._ask(h)
                return
        self._handles.pop(h.id, None)
        if self._running is h:
            self._running = None
        if err is not None:
            self.status = "ready" if self._loaded else "error"
            self._set_error(err)
            h._finish(None, err)
            self._next()
            return
        msg, _ = reply.result()
        result = {k: v for k, v in msg.items() if k not in ("v", "kind", "id")}
        if h.dropped_turns:
            result["dropped_turns"] = h.dropped_turns
        self._record(result, h.prompt if record else None, wall_s=time.perf_counter() - h.t_sent)
        self.status = "ready"
        h._finish(result, None)
        self._next()

    def _record(self, result: dict, user: str | None, wall_s: float | None = None) -> None:
        usage = dict(result.get("usage") or {})
        usage["finish_reason"] = result.get("finish_reason")
        if wall_s is not None:
            usage["wall_s"] = wall_s
        self.stats = usage
        if user is not None:
            self.messages = [*self.messages, {"role": "user", "content": user},
                             {"role": "assistant", "content": str(result.get("text", ""))}]

    async def ask(self, prompt: str, **settings: Any) -> str:
        """Ask and wait for the whole answer (the turn is added to ``messages``)."""
        return await self.send(prompt, **settings)

    async def stream(self, prompt: str, **settings: Any) -> AsyncIterator[str]:
        """Ask and yield the answer piece by piece as the page generates it."""
        h = self.send(prompt, **settings)
        q = h._queue()
        try:
            while True:
                tok = await q.get()
                if tok is None:
                    break
                yield tok
        except (asyncio.CancelledError, GeneratorExit):
            h.stop()
            raise
        if h.error is not None:
            raise h.error

    async def complete(self, messages: list[dict], **settings: Any) -> dict:
        """OpenAI-style chat completion over ``messages`` (the widget's conversation is left alone).

        Returns ``{"id", "object": "chat.completion", "created", "model", "choices": [{"index", "message",
        "finish_reason"}], "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}, "timings": {...}}``.
        """
        msgs = _clean_messages([{"role": m["role"], "content": m["content"]} for m in messages])
        if not msgs or msgs[-1]["role"] != "user":
            raise ValueError("messages must end with a user message")
        h = self._submit(msgs[-1]["content"], msgs, self._settings(settings), None, None, record=False)
        text = await h
        r = h.result or {}
        u = r.get("usage") or {}
        return {
            "id": f"chatcmpl-{h.id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self._loaded or self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": r.get("finish_reason")}],
            "usage": {k: int(u.get(k) or 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
            "timings": {k: u.get(k) for k in ("prefill_tokens_per_s", "decode_tokens_per_s",
                                             "time_to_first_token_s", "e2e_latency_s")},
        }

    def stop(self) -> None:
        """Stop the answer being generated (it ends with the text so far) and drop the ones queued behind it."""
        for h in list(self._waiting):
            h.stop()
        if self._running is not None:
            self._running.stop()
        else:
            self._ch.send("stop", {})

    def reset(self) -> None:
        """Forget the conversation (``messages``, ``stats``) and the page's KV cache."""
        self.stop()
        self.messages = []
        self.stats = {}
        self.error = {}
        self._ch.request("call", {"fn": "reset"}, timeout=None)

    # ---- from the page ------------------------------------------------------------------------------

    def _on_page_done(self, msg: dict, _buffers: list) -> None:
        """A turn typed in the page finished: record it, so Python sees it in ``messages``."""
        if msg.get("origin") != "page":
            return
        result = {k: v for k, v in msg.items() if k not in ("v", "kind", "id")}
        self._record(result, str(msg.get("user", "")))

    def _on_page_notice(self, msg: dict, _buffers: list) -> None:
        if msg.get("id") is None and msg.get("origin") == "page":
            self.error = {"code": msg.get("code", "error"), "message": msg.get("message", "")}

    def _on_page_call(self, msg: dict, _buffers: list) -> None:
        if msg.get("fn") == "reset-request":
            self.reset()

    def _set_error(self, err: BaseException, status: str | None = None) -> None:
        code = getattr(err, "code", "error")
        message = err.args[0] if err.args else str(err)
        self.error = {"code": code, "message": str(message)}
        if status:
            self.status = status


def clean_text(text: str) -> str:
    """``text`` with lone UTF-16 surrogates replaced by U+FFFD: Jupyter encodes every message as UTF-8, where a
    lone surrogate (pasted from a broken source, or sliced mid-emoji) raises and the message is lost."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _clean_messages(messages: list) -> list:
    return [dict(m, content=clean_text(m["content"])) if isinstance(m, dict) and isinstance(m.get("content"), str)
            else m for m in messages]


def _drop_oldest_turn(messages: list[dict]) -> list[dict] | None:
    """``messages`` without the older half of its earlier turns (at least one; system messages and the last
    question stay); None when only the last question is left. Half, not one: each retry re-prefills the whole
    history, so dropping one turn at a time would re-prefill the full window on every later turn."""
    head = [m for m in messages if m.get("role") == "system"]
    rest = [m for m in messages if m.get("role") != "system"]
    starts = [k for k, m in enumerate(rest[:-1]) if m.get("role") == "user"]  # earlier turns
    if len(rest) <= 1 or not starts:
        return None
    drop = max(1, (len(starts) + 1) // 2)
    cut = starts[drop] if drop < len(starts) else len(rest) - 1
    return head + rest[cut:]


class _Awaitable:
    """Returned by :meth:`Chat.load`: nothing to do unless awaited (then it gives the load report)."""

    def __init__(self, coro_fn):
        self._coro = coro_fn

    def __await__(self):
        # A generator, so its frame keeps this object alive while awaited: `await chat.load(m)` drops the
        # temporary at once, and __del__ would close the coroutine under the running await.
        self._awaited = True
        return (yield from self._coro.__await__())

    def __del__(self):
        # Never awaited is fine (load runs anyway); close the coroutine so Python does not warn.
        if getattr(self, "_awaited", False):
            return
        try:
            self._coro.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return "<load request: await it for the load report>"


__all__ = ["Chat", "ChatHandle", "Aborted"]
