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
import json
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterable

import anywidget
import traitlets as t

from ..artifacts import Blob, BlobSender, static_blob
from ..errors import Aborted, BadModel, PageTimeout, WebLLMWidgetError
from ..hosts import refuse_await
from ..protocol import CALL, LOAD, Channel
from ..wire.schema import ChatCall, ChatLoad
from .answers import AnswerQueue, ChatHandle, ContextOverflow
from .batch import Batch, prompt_list
from .browser_cache import BrowserCache
from .messages import clean_messages, clean_text, conversation, to_markdown
from ..models.picker import PICKER_PREBUILT, basic_entries, describe_spec  # noqa: F401 (PICKER_PREBUILT: re-exported)
from .openai_format import PAGE_PARAMS, UNSUPPORTED, chat_completion, chunk, request_messages, request_settings, unsupported
from .tool_calls import TOOL_PARAMS, ToolPlan, ToolStream, tool_plan, tool_turns

if TYPE_CHECKING:  # pragma: no cover
    from .openai_client import AsyncOpenAIClient

_STATIC = Path(__file__).parent.parent / "static"

#: Environment variable naming the model ``Chat()`` loads when none is given.
MODEL_ENV = "WEBLLM_WIDGET_MODEL"

#: Generation settings sent with each request (unset ones keep the model's defaults).
SETTINGS = ("temperature", "top_p", "max_tokens", "seed", "stop", "frequency_penalty", "presence_penalty",
            "repetition_penalty")
#: Settings whose traitlet has another name.
_TRAIT_OF = {"stop": "stop_sequences"}

#: Alternatives per token the widget's token probabilities view shows (``show_token_probs``).
TOKEN_PROBS_TOP = 5

#: Seconds a model load may take (software WebGPU compiles shaders slowly).
LOAD_TIMEOUT = 3600.0


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
    status = t.Unicode("idle", help="idle, loading, ready, generating, swapping (this chat's model is loaded again "
                       "after the page unloaded it to make room for another) or error").tag(sync=True)
    progress = t.Dict(help="last load progress: progress (0..1), phase, bytes_done, bytes_total, eta_s").tag(sync=True)
    messages = t.List(t.Dict(), help="the conversation: [{'role', 'content'}], user and assistant turns").tag(sync=True)
    answered = t.Int(0, help="answers the page finished; written by the page only, so that hosts which re-run "
                             "code on a widget change from the page (marimo's mo.ui.anywidget) see each one"
                     ).tag(sync=True)
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
                     "'schedule': the WebGPU library's kernel schedule ('fallback' on software adapters), "
                     "'dispatch': how kernels reach the GPU ('batched', or 'upstream: why'), "
                     "'shaders': the model's kernels compiled at load and left for first use ({'library', "
                     "'at_load', 'deferred': {name: why}, 'compiled_later', 'mode'}; WebGPU only), "
                     "'cpu_build': on the CPU, 'relaxed-simd' (8-bit dot products) or 'simd128'}").tag(sync=True)
    error = t.Dict(help="last error: {'code', 'message'}; empty when none").tag(sync=True)
    notice = t.Unicode(help="the page's last word about this chat's model: unloaded to make room for another "
                       "model, or loaded again for an answer; empty when none").tag(sync=True)
    memory_budget = t.Int(None, allow_none=True,
                          help="bytes the page's models may take together (one engine serves every Chat on the "
                               "page; the budget sent with the latest load holds). Past it the least recently used "
                               "model is unloaded, visibly, and loaded again when its Chat asks. None: half the "
                               "device's memory as the browser reports it").tag(sync=True)
    show_token_probs = t.Bool(False, help="show the last answer's tokens in the widget coloured by the model's "
                              "probability, with the top 5 alternatives on hover (every answer then asks for "
                              "logprobs; WebGPU copies each step's logits to the CPU for it)").tag(sync=True)
    batch_progress = t.Dict(help="the running batch (see batch()): {'done', 'total'}; empty when none").tag(sync=True)
    # Names this widget's state in the page (anywidget gives each view a different model proxy).
    _page_key = t.Unicode().tag(sync=True)

    @t.default("_page_key")
    def _new_page_key(self) -> str:
        return uuid.uuid4().hex
    context_overflow = t.Enum(ContextOverflow.MODES, "error",
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
        self._answers = AnswerQueue(self._ch, owner=self, load=lambda: self._load_reply,
                                    on_asking=self._on_asking, on_answered=self._on_answered,
                                    on_progress=self._on_answer_progress,
                                    overflow=ContextOverflow(self.context_overflow))
        self._load_reply = None
        #: model id -> its chat template's tool-call format (None: the template calls no tools, or is not known)
        self._tool_formats: dict[str, dict | None] = {}
        self._tool_refusals: dict[str, str | None] = {}  # why a model's tool-calling template is not carried
        self._load_info: dict | None = None
        self._loaded: str | None = None
        self._loading_model = False
        self._batch: Batch | None = None
        self._describing = False
        self._ch.on_ready(self._on_ready)
        self._ch.on("done", self._on_page_done)
        self._ch.on("error", self._on_page_notice)
        self._ch.on("call", self._on_page_call)
        self._ch.on("progress", self._on_page_progress)
        self.observe(self._on_model_trait, "model")
        self.observe(self._on_model_trait, "device")
        self.observe(self._on_overflow_trait, "context_overflow")
        if autoload:
            self.load()

    # ---- loading ------------------------------------------------------------------------------------

    @staticmethod
    def _picker_models(model: Any) -> list[dict]:
        return basic_entries(model)

    def _spec(self, model: str) -> dict:
        """What the page's engine needs to load ``model``; local files are offered as blobs."""
        from ..models.devices import model_spec, spec_files

        # device="auto": both builds are offered (only the one the page picks travels); see models/devices.py.
        spec, paths = model_spec(model, self.device)
        tool_format = refused = None
        for f in spec_files(spec):
            self._blobs.offer(Blob.from_path(paths[f["sha256"]], name=f["name"], sha256=f["sha256"]))
            if f["name"].rsplit("/", 1)[-1] == "mlc-chat-config.json" and tool_format is None:
                # the template's tool-call format, when the build found one (compile/tool_calls.py), or why not
                doc = json.loads(paths[f["sha256"]].read_text())
                tool_format, refused = doc.get("tool_calls"), doc.get("tool_calls_refused")
        self._tool_formats[spec["id"]] = self._tool_formats[model] = tool_format
        self._tool_refusals[spec["id"]] = self._tool_refusals[model] = refused
        self._describe(model, describe_spec(spec, paths))
        return spec

    def _describe(self, model: str, facts: dict) -> None:
        """Put what is known of ``model`` (size, memory, its builds) into its picker entry."""
        if not facts:
            return
        entries = [dict(e) for e in self.models]
        for e in entries:
            if e.get("id") == model:
                e.update(facts)
                break
        else:
            entries.insert(1 if entries and entries[0].get("id") == "default" else 0,
                           {"id": model, "label": Path(model).name or model, **facts})
        self.models = entries

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
        self.notice = ""
        self.progress = {"progress": 0.0, "phase": "install"}
        self._load_info = None
        payload = ChatLoad(engine=engine, model=spec, memory_budget=self.memory_budget)
        reply = self._ch.request(LOAD, payload, on_event=self._on_load_event,
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
                        "schedule": msg.get("schedule"), "dispatch": msg.get("dispatch"),
                        "decode_loop": msg.get("decode_loop"), "prompt_cache": msg.get("prompt_cache"),
                        "shaders": msg.get("shaders"), "cpu_build": msg.get("cpu_build")}
        if self.backend["device"] == "cpu":
            build = ("WebAssembly relaxed SIMD, 8-bit dot products" if msg.get("cpu_build") == "relaxed-simd"
                     else "WebAssembly SIMD128")
            self.gpu = f"CPU ({build}) — {self.backend['reason']}"
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

    async def show(self, timeout: float | None = None) -> dict:
        """Show the chat again in this cell's output and wait until that new view has loaded the model.

        For hosts that deliver a cell's messages only to that cell's own output (Colab): a chat shown by an
        earlier cell never hears a later one (asking there raises :class:`ViewUnreachable` at once), so a
        later cell does ``await chat.show()`` and then asks. Returns the new view's load report.
        """
        from IPython.display import display

        refuse_await("chat.show() inside a cell")
        before = self._ch.ready_count
        display(self)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._ch.ready_count == before:  # the new view says ready, then the model loads into it again
            if deadline is not None and loop.time() > deadline:
                raise PageTimeout(f"no new view of the chat said ready within {timeout:.0f} s; is this a notebook?")
            await asyncio.sleep(0.05)
        return await self.ready(None if deadline is None else max(1.0, deadline - loop.time()))

    @property
    def cache(self) -> BrowserCache:
        """The models this browser keeps for the page: ``await chat.cache.list()``, ``.usage()``,
        ``.delete(model)``, ``.clear()``, ``.persist()`` (see :mod:`webllm_widget.widgets.browser_cache`)."""
        return BrowserCache(self)

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

    def _on_overflow_trait(self, change: dict) -> None:
        self._answers.overflow = ContextOverflow(change["new"])

    def _on_ready(self, page: dict) -> None:
        if self._ch.ready_count > 1 and self._load_reply is not None:
            # A reloaded page knows nothing: load again (from its Cache Storage, no model bytes sent).
            self._answers.fail_all(
                lambda: WebLLMWidgetError("the page was reloaded during this answer", code="page-reloaded"))
            self.load()

    # ---- asking -------------------------------------------------------------------------------------

    @t.validate("messages")
    def _valid_messages(self, proposal: dict) -> list:
        return clean_messages(proposal["value"])

    @t.validate("system_prompt")
    def _valid_system_prompt(self, proposal: dict) -> str:
        return clean_text(proposal["value"])

    def _settings(self, overrides: dict) -> dict:
        """The traitlets' settings with ``overrides`` on top, checked (see openai_format.request_settings)."""
        for k in overrides:
            if k in UNSUPPORTED:
                raise unsupported(k, UNSUPPORTED[k])
            if k in TOOL_PARAMS:
                raise unsupported(k, "tools are taken by chat.complete() and chat.openai, whose answers carry "
                                     "tool_calls")
        unknown = set(overrides) - set(PAGE_PARAMS)
        if unknown:
            raise TypeError(f"unknown generation setting(s): {', '.join(sorted(unknown))}; known: {', '.join(PAGE_PARAMS)}")
        s = {k: getattr(self, _TRAIT_OF.get(k, k)) for k in SETTINGS}
        if self.show_token_probs:
            s.update(logprobs=True, top_logprobs=TOKEN_PROBS_TOP)
        s.update(overrides)
        checked, _ = request_settings({k: v for k, v in s.items() if v is not None and v != []})
        return checked

    def _history(self, prompt: str) -> list[dict]:
        return conversation(self.system_prompt, self.messages, prompt)

    def send(self, prompt: str, *, on_token: Callable[[str], Any] | None = None,
             on_done: Callable[[str], Any] | None = None, buffers: Any = None, **settings: Any) -> ChatHandle:
        """Ask without waiting: returns a :class:`ChatHandle` at once; ``on_token(text)`` sees each piece,
        ``on_done(full_text)`` the end. The turn is added to ``messages`` when it completes."""
        if not isinstance(prompt, str):
            # ipywidgets' own Widget.send(content, buffers) (a custom comm message) shares this name.
            return super().send(prompt, buffers=buffers)
        prompt = clean_text(prompt)
        return self._answers.submit(prompt, lambda: self._history(prompt), self._settings(settings), on_token,
                                    on_done, record=True)

    def _on_asking(self, h: ChatHandle) -> None:
        self.status = "generating"

    def _on_answer_progress(self, h: ChatHandle, msg: dict) -> None:
        # The page unloaded this chat's model to make room for another: it is loaded again before the answer.
        if not msg.get("swap"):
            return
        done = msg.get("phase") == "done"
        self.progress = {k: v for k, v in msg.items() if k not in ("v", "kind", "id", "swap")}
        self.notice = str(msg.get("text", ""))
        self.status = "generating" if done else "swapping"

    def _on_page_progress(self, msg: dict, _buffers: list) -> None:
        # Another chat's load unloaded this chat's model (a notice without id): say so.
        if msg.get("id") is None and msg.get("phase") == "unloaded":
            self.notice = str(msg.get("text", ""))

    def _on_answered(self, h: ChatHandle, result: dict | None, err: BaseException | None) -> None:
        if err is not None:
            self.status = "ready" if self._loaded else "error"
            self._set_error(err)
            return
        self._record(result, h.prompt if h.records else None, wall_s=time.perf_counter() - h.t_sent)
        self.status = "ready"

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
        """Ask and wait for the whole answer (the turn is added to ``messages``). In marimo, where a running cell
        receives no widget messages, raises :class:`HostHoldsMessages` at once: use :meth:`send` there."""
        refuse_await("chat.ask() inside a cell")
        return await self.send(prompt, **settings)

    async def stream(self, prompt: str, **settings: Any) -> AsyncIterator[str]:
        """Ask and yield the answer piece by piece as the page generates it (refused in marimo, as :meth:`ask`)."""
        refuse_await("chat.stream() inside a cell")
        h = self.send(prompt, **settings)
        q = h.token_queue()
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

    async def complete(self, messages: list[dict], **params: Any) -> "dict | CompletionStream":
        """OpenAI-style chat completion over ``messages`` (the widget's conversation is left alone).

        Takes the parameters of OpenAI's ``chat.completions.create``: ``temperature``, ``top_p``, ``max_tokens``
        (or ``max_completion_tokens``), ``seed``, ``stop``, penalties, ``n`` (choices one after another; choice i
        samples with ``seed + i``), ``logprobs``/``top_logprobs`` (log-softmax of the model's logits, before
        temperature, logit_bias and penalties), ``logit_bias`` ({token id: -100..100}), ``response_format``
        (``{"type": "json_object"}``, ``{"type": "json_schema", "json_schema": {"name", "schema"}}``, a Pydantic
        model class: each message then carries ``parsed``, or ``{"type": "grammar", "grammar": EBNF}``; xgrammar
        masks the logits on both engines), ``tools``/``tool_choice``/``parallel_tool_calls`` for models whose chat
        template calls tools (Qwen2.5 / Qwen3 style; see :mod:`webllm_widget.widgets.tool_calls`: calls come back as the message's
        ``tool_calls`` with ``finish_reason`` ``"tool_calls"``; assistant ``tool_calls`` and ``role: "tool"`` results
        in ``messages`` are written as the template writes them), ``stream`` (then an async iterator of
        ``chat.completion.chunk`` dicts is returned). ``model`` is
        taken but the chat answers with its own model (the reply's ``model`` names it). A parameter that cannot be
        honoured raises :class:`~webllm_widget.errors.UnsupportedParameter` naming it.

        Returns ``{"id", "object": "chat.completion", "created", "model", "choices": [{"index", "message",
        "finish_reason", "logprobs"?}], "usage": {"prompt_tokens", "completion_tokens", "total_tokens",
        "prompt_tokens_details": {"cached_tokens"}}, "timings": {...}}``; ``cached_tokens`` are the prompt's tokens
        found in the KV cache (a prefix shared with what the model last read), counted in ``prompt_tokens``.

        Example::

            reply = await chat.complete([{"role": "user", "content": "Name a city as JSON"}],
                                        response_format={"type": "json_object"}, max_tokens=32)
        """
        refuse_await("chat.complete() inside a cell")
        settings, opts = request_settings(params, self._loaded)
        model = self._loaded or self.model
        fmt = self._tool_formats.get(model)  # the loaded model's, or (still loading) the one asked for
        refused = self._tool_refusals.get(model)
        plan = tool_plan(opts["tools"], fmt, model, settings.get("response_format"), refused=refused)
        msgs = tool_turns(request_messages(messages), fmt, plan, model, refused=refused)
        page = self._settings(settings)
        if plan is not None and plan.response_format is not None:
            page["response_format"] = plan.response_format
        h = self._answers.submit(msgs[-1]["content"], msgs, page, record=False)
        if opts["stream"]:
            return CompletionStream(h, model, include_usage=opts["include_usage"], tools=plan)
        text = await (asyncio.wait_for(h.wait(), opts["timeout"]) if opts["timeout"] else h)
        return chat_completion(h.id, (h.result or {}).get("model") or model, text, h.result, parse=opts["parse"],
                               tools=plan)

    @property
    def openai(self) -> "AsyncOpenAIClient":
        """A drop-in for ``openai.AsyncOpenAI`` answered by this chat's model: code written for the OpenAI API runs
        with only the client line changed (replies are the ``openai`` package's types).

        Example::

            client = chat.openai
            reply = await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
            reply.choices[0].message.content
        """
        from .openai_client import AsyncOpenAIClient

        return AsyncOpenAIClient(self)

    def regenerate(self, **settings: Any) -> ChatHandle:
        """Answer the last user message again: the answer after it leaves ``messages`` and the new one takes its
        place (as the widget's Regenerate button does). Returns a :class:`ChatHandle`; ``await`` it for the text."""
        users = [i for i, m in enumerate(self.messages) if m.get("role") == "user"]
        if not users:
            raise ValueError("there is no user message to answer again: ask something first")
        return self.edit(users[-1], self.messages[users[-1]]["content"], **settings)

    def edit(self, index: int, text: str, **settings: Any) -> ChatHandle:
        """Replace user message ``messages[index]`` with ``text`` and answer it; the conversation after it is
        dropped (as editing a message in the widget does). Returns a :class:`ChatHandle`.

        Example::

            await chat.edit(0, "What is the capital of Spain?")
        """
        if not (0 <= index < len(self.messages)) or self.messages[index].get("role") != "user":
            raise ValueError(f"messages[{index}] is not a user message; user messages are at "
                             f"{[i for i, m in enumerate(self.messages) if m.get('role') == 'user']}")
        self.messages = self.messages[:index]
        return self.send(text, **settings)

    def to_markdown(self) -> str:
        """The conversation as Markdown (``## User`` / ``## Assistant`` sections, the system prompt first when
        set): the same text as the widget's "Export .md"."""
        return to_markdown(self.system_prompt, self.messages)

    async def batch(self, prompts: Iterable[str], *, system_prompt: str | None = None, progress: bool = True,
                    **settings: Any) -> list[dict]:
        """Answer each of ``prompts`` (a list or a pandas column) in a fresh conversation of its own: the system
        prompt (this chat's, or ``system_prompt``) and the prompt. ``messages`` is left alone. Returns one record
        per prompt: ``{"prompt", "answer", "finish_reason", "usage", "timings", "error"}`` (see
        :mod:`webllm_widget.widgets.batch`). Progress shows as a tqdm bar and in the widget; ``chat.stop()`` or the
        widget's Stop ends the batch (the prompts not reached come back with ``finish_reason == "not-run"``).

        Example::

            records = await chat.batch(df["question"], temperature=0, max_tokens=64)
            df["answer"] = [r["answer"] for r in records]
        """
        refuse_await("chat.batch() inside a cell")
        if self._batch is not None:
            raise RuntimeError("a batch is already running on this chat: await it, or chat.stop() to end it")
        b = Batch(self, prompt_list(prompts), self.system_prompt if system_prompt is None else clean_text(system_prompt),
                  self._settings(settings), progress)
        self._batch = b
        try:
            return await b.run()
        finally:
            self._batch = None

    def stop(self) -> None:
        """Stop the answer being generated (it ends with the text so far) and drop the ones queued behind it;
        a running :meth:`batch` ends too."""
        if self._batch is not None:
            self._batch.stop()
        self._answers.stop_all()

    def reset(self) -> None:
        """Forget the conversation (``messages``, ``stats``) and the page's KV cache."""
        self.stop()
        self.messages = []
        self.stats = {}
        self.error = {}
        self._ch.request(CALL, ChatCall(fn="reset"), timeout=None)

    # ---- from the page ------------------------------------------------------------------------------

    def _on_page_done(self, msg: dict, _buffers: list) -> None:
        """A turn typed in the page finished: record it, so Python sees it in ``messages``."""
        if msg.get("origin") != "page":
            return
        result = {k: v for k, v in msg.items() if k not in ("v", "kind", "id", "base")}
        base = msg.get("base")
        if isinstance(base, int) and 0 <= base <= len(self.messages):
            # regenerate / edit-and-resend in the page: the turn replaces messages[base:]
            self.messages = self.messages[:base]
        self._record(result, str(msg.get("user", "")))

    def _on_page_notice(self, msg: dict, _buffers: list) -> None:
        if msg.get("id") is None and msg.get("origin") == "page":
            self.error = {"code": msg.get("code", "error"), "message": msg.get("message", "")}

    def _on_page_call(self, msg: dict, _buffers: list) -> None:
        if msg.get("fn") == "reset-request":
            self.reset()
        elif msg.get("fn") == "describe-models":
            self._describe_others()

    def _describe_others(self) -> None:
        """The picker was opened: describe the built-in model too when this chat runs another one (finding its
        folders reads the GGUF's metadata, seconds of work, so it is done only when someone looks). Runs in a
        thread; the entry is updated on the kernel's loop."""
        entry = next((e for e in self.models if e.get("id") == "default"), None)
        if entry is None or entry.get("variants") or self._describing:
            return
        self._describing = True
        device = self.device

        def work() -> dict:
            from ..models.devices import model_spec

            spec, paths = model_spec("default", device, progress=False)
            return describe_spec(spec, paths)

        async def run() -> None:
            try:
                facts = await asyncio.get_running_loop().run_in_executor(None, work)
            except Exception as e:  # shown beside the entry; the chat itself is unaffected
                facts = {"facts_error": f"{type(e).__name__}: {e}"[:300]}
            finally:
                self._describing = False
            self._describe("default", facts)

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no running loop (plain script): describe now
            self._describing = False
            self._describe("default", work())
            return
        self._describe_task = loop.create_task(run())

    def _set_error(self, err: BaseException, status: str | None = None) -> None:
        code = getattr(err, "code", "error")
        message = err.args[0] if err.args else str(err)
        self.error = {"code": code, "message": str(message)}
        if status:
            self.status = status


class CompletionStream:
    """The answer of ``complete(..., stream=True)`` as ``chat.completion.chunk`` dicts: ``async for c in stream``.
    The first chunk carries the role, then one chunk per piece of text, then one with ``finish_reason`` (and the
    answer's ``logprobs`` when asked for), then, with ``stream_options={"include_usage": True}``, the usage chunk.
    Leaving the loop early (or :meth:`close`) stops the answer. ``wrap`` turns each dict into another type (the
    drop-in client's ``openai.types.chat.ChatCompletionChunk``)."""

    def __init__(self, handle: ChatHandle, model: str, *, include_usage: bool = False,
                 wrap: Callable[[dict], Any] = lambda d: d, tools: ToolPlan | None = None):
        self.handle = handle
        self._model = model
        self._include_usage = include_usage
        self._wrap = wrap
        self._tools = ToolStream(tools) if tools is not None and tools.mode != "none" else None

    def __aiter__(self):
        return self._chunks()

    async def _chunks(self):
        h = self.handle
        created = int(time.time())
        q = h.token_queue()
        try:
            yield self._wrap(chunk(h.id, self._model, created, role="assistant", content=""))
            while True:
                tok = await q.get()
                if tok is None:
                    break
                if self._tools is not None:
                    tok = self._tools.feed(tok)  # text that may open a call is held until the answer ends
                if tok:
                    yield self._wrap(chunk(h.id, self._model, created, content=tok))
        except (asyncio.CancelledError, GeneratorExit):
            h.stop()
            raise
        if h.error is not None:
            raise h.error
        r = h.result or {}
        model = r.get("model") or self._model
        first = (r.get("choices") or [{}])[0]
        reason = r.get("finish_reason")
        if self._tools is not None:
            rest, calls, reason = self._tools.finish(reason)
            if rest:
                yield self._wrap(chunk(h.id, model, created, content=rest))
            if calls:
                yield self._wrap(chunk(h.id, model, created, tool_calls=calls))
        yield self._wrap(chunk(h.id, model, created, finish_reason=reason, logprobs=first.get("logprobs")))
        if self._include_usage:
            yield self._wrap(chunk(h.id, model, created, usage=r.get("usage"), final_usage=True))

    async def close(self) -> None:
        """Stop the answer (the chunks end)."""
        self.handle.stop()

    async def __aenter__(self) -> "CompletionStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if not self.handle.done():
            self.handle.stop()


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


__all__ = ["Chat", "ChatHandle", "CompletionStream", "Aborted"]
