"""What each message between kernel and page carries: the one definition of the wire, for both languages.

Every message is an anywidget custom message ``{"v": PROTOCOL_VERSION, "kind": ..., "id": ..., **fields}``
(the envelope is :mod:`webllm_widget.protocol`'s); this module says which fields each kind carries, for each
widget, and the records inside them (a model spec, a load report, generation settings, ...). The TypeScript
types the page uses (``js/src/wire/schema.gen.ts``) are generated from these classes, and the error codes from
:data:`webllm_widget.errors.ERRORS`, by ``scripts/gen_wire_ts.py``; ``tests/unit/test_wire_schema.py`` fails
when the committed TypeScript differs from what this module generates.

A record is a :class:`Struct`: a ``dict`` (so it goes on the wire as it is) whose constructor refuses a field
it does not declare or a missing required one. Fields are class annotations; ``NotRequired[...]`` marks an
optional one, and a trailing ``# comment`` documents it (the comment goes into the TypeScript too). An
optional field given as ``None`` is left out unless its type allows ``None``. Messages are Structs with a
``KIND`` and a ``SENDER``.

    spec = ModelSpec(id="m", prebuilt=True)
    channel.request(LOAD, ChatLoad(engine=ref, model=spec))

Hand-written instead of JSON Schema plus a generator library: the schema is small, the TypeScript wanted is
plain interfaces with the same docs, and the Python side wants dicts that check their own keys; no library
here does all three without more glue than this module.
"""
from __future__ import annotations

import inspect
import re
import types
import typing
from typing import Any, ClassVar, Literal, NewType, NotRequired, Union

PROTOCOL_VERSION = 1

#: One of :data:`webllm_widget.errors.ERRORS` (in TypeScript, the generated ``ErrorCode`` union).
ErrorCode = NewType("ErrorCode", str)

READY = "ready"          # page -> kernel: handlers listen; payload describes the page
LOAD = "load"            # kernel -> page: load something made of blobs
PROGRESS = "progress"    # page -> kernel: how far a request got
ASK = "ask"              # kernel -> page: a prompt
TOKEN = "token"          # page -> kernel: streamed text
DONE = "done"            # page -> kernel: a request finished
STOP = "stop"            # kernel -> page: stop a request
ERROR = "error"          # either way: failure with code + message; without id, a notice to show
NEED_BLOB = "need-blob"  # page -> kernel: send me this blob
BLOB = "blob"            # kernel -> page: one chunk of a blob
ACK = "ack"              # page -> kernel: chunks received (flow control)
CALL = "call"            # either way: run a function (GPU widget), reset (chat)
RESULT = "result"        # page -> kernel: outputs of a call or a load
PROFILE = "profile"      # kernel -> page: run a model library's steps and time its kernels (GPU widget)

KINDS = (READY, LOAD, PROGRESS, ASK, TOKEN, DONE, STOP, ERROR, NEED_BLOB, BLOB, ACK, CALL, RESULT, PROFILE)
#: Replies that end a request.
FINAL_KINDS = frozenset({RESULT, DONE, ERROR})
#: Fields of the envelope, present on every message (``id`` on requests and their replies).
ENVELOPE = ("v", "kind", "id")


class _Field(typing.NamedTuple):
    name: str
    type: Any
    required: bool
    doc: str


class Struct(dict):
    """A JSON object with declared fields. ``Struct(**fields)`` checks the names; values go in as given,
    except that a dict given for a Struct-typed field is built into that Struct (and so checked too)."""

    _field_cache: ClassVar[dict[type, dict[str, _Field]]] = {}

    def __init__(self, **fields: Any):
        known = self.fields()
        unknown = sorted(set(fields) - set(known))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(map(repr, unknown))}; "
                            f"its fields: {', '.join(known)} (add it to webllm_widget/wire/schema.py and run "
                            "scripts/gen_wire_ts.py)")
        out = {}
        for name, value in fields.items():
            f = known[name]
            if value is None and not f.required and not _allows_none(f.type):
                continue
            out[name] = _build(f.type, value)
        missing = [n for n, f in known.items() if f.required and n not in out]
        if missing:
            raise TypeError(f"{type(self).__name__} needs {', '.join(map(repr, missing))}")
        super().__init__(out)

    @classmethod
    def fields(cls) -> dict[str, _Field]:
        """The declared fields, in order (resolved once per class)."""
        if cls not in Struct._field_cache:
            hints = typing.get_type_hints(cls, include_extras=True)
            docs: dict[str, str] = {}
            for klass in reversed(cls.__mro__):
                if klass in (Struct, Message, dict, object):
                    continue
                docs.update(_field_docs(klass))
            out: dict[str, _Field] = {}
            for klass in reversed(cls.__mro__):
                for name in getattr(klass, "__annotations__", {}):
                    t = hints[name]
                    if typing.get_origin(t) is ClassVar or name.startswith("_"):
                        continue
                    required = typing.get_origin(t) is not NotRequired
                    # a subclass may narrow a field's type: the field keeps its place
                    out[name] = _Field(name, t if required else typing.get_args(t)[0], required, docs.get(name, ""))
            Struct._field_cache[cls] = out
        return Struct._field_cache[cls]

    def replace(self, **changes: Any) -> "Struct":
        """A copy with ``changes`` applied (checked like the constructor)."""
        return type(self)(**{**self, **changes})

    def __setitem__(self, name: str, value: Any) -> None:
        f = self.fields().get(name)
        if f is None:
            raise TypeError(f"{type(self).__name__} has no field {name!r}; its fields: {', '.join(self.fields())}")
        super().__setitem__(name, _build(f.type, value))

    def update(self, *args: Any, **kw: Any) -> None:  # type: ignore[override]
        for name, value in dict(*args, **kw).items():
            self[name] = value

    def setdefault(self, name: str, value: Any = None) -> Any:  # type: ignore[override]
        if name not in self:
            self[name] = value
        return self[name]

    def __reduce__(self):  # copy and pickle without calling __init__ (required fields are already in)
        return (_restore, (type(self), dict(self)))

    @classmethod
    def problems(cls, obj: Any, where: str = "") -> list[str]:
        """What makes ``obj`` not one of these (unknown or missing fields, also in nested records); [] if none.

        Envelope fields are allowed on messages. Values are checked only for nested records, not their types.
        """
        where = where or cls.__name__
        if not isinstance(obj, dict):
            return [f"{where}: expected an object, got {type(obj).__name__}"]
        known = cls.fields()
        allowed = set(known) | (set(ENVELOPE) if issubclass(cls, Message) else set())
        out = [f"{where}: unknown field {k!r}" for k in obj if k not in allowed]
        out += [f"{where}: missing field {n!r}" for n, f in known.items() if f.required and n not in obj]
        for name, f in known.items():
            if name in obj:
                out += _nested_problems(f.type, obj[name], f"{where}.{name}")
        return out


class Message(Struct):
    """A message: a Struct sent as one anywidget custom message of kind ``KIND`` by ``SENDER``."""

    KIND: ClassVar[str]
    SENDER: ClassVar[Literal["kernel", "page", "either"]]
    WIDGET: ClassVar[Literal["chat", "gpu", "any"]] = "any"

    def __init_subclass__(cls, **kw: Any):
        super().__init_subclass__(**kw)
        if cls.__dict__.get("KIND") is not None:
            assert cls.KIND in KINDS, cls.KIND
            MESSAGES.append(cls)


#: Every message class, in the order defined.
MESSAGES: list[type[Message]] = []
#: Every record class (not a message) the messages use, in the order defined.
RECORDS: list[type[Struct]] = []


def record(cls: type[Struct]) -> type[Struct]:
    """Register a record class for the TypeScript output."""
    RECORDS.append(cls)
    return cls


def _restore(cls: type[Struct], items: dict) -> Struct:
    obj = dict.__new__(cls)
    dict.update(obj, items)
    return obj


def _allows_none(t: Any) -> bool:
    return t is Any or (typing.get_origin(t) in (Union, types.UnionType) and type(None) in typing.get_args(t))


def _struct_of(t: Any) -> type[Struct] | None:
    if isinstance(t, type) and issubclass(t, Struct):
        return t
    if typing.get_origin(t) in (Union, types.UnionType):
        for a in typing.get_args(t):
            if isinstance(a, type) and issubclass(a, Struct):
                return a
    return None


def _build(t: Any, value: Any) -> Any:
    s = _struct_of(t)
    if s is not None and isinstance(value, dict) and not isinstance(value, s):
        return s(**value)
    if typing.get_origin(t) is list and isinstance(value, (list, tuple)):
        (item,) = typing.get_args(t)
        return [_build(item, v) for v in value]
    return value


def _nested_problems(t: Any, value: Any, where: str) -> list[str]:
    s = _struct_of(t)
    if s is not None and isinstance(value, dict):
        return s.problems(value, where)
    if typing.get_origin(t) is list and isinstance(value, list):
        (item,) = typing.get_args(t)
        return [p for i, v in enumerate(value) for p in _nested_problems(item, v, f"{where}[{i}]")]
    return []


_DOC_LINE = re.compile(r"^    (\w+): [^#]*#:? ?(.*)$")


def _field_docs(cls: type) -> dict[str, str]:
    """The trailing comment of each field line in the class body."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return {m.group(1): m.group(2).strip() for line in src.splitlines() if (m := _DOC_LINE.match(line))}


# ---- records ------------------------------------------------------------------------------------------------

@record
class BlobRef(Struct):
    """A content-addressed file the kernel offers the page (a model file, an engine or runtime bundle)."""

    sha256: str
    size: int
    name: str


@record
class PrebuiltHub(Struct):
    """Where web-llm fetches a prebuilt model from: its folder (Hugging Face) and its library."""

    model: str  # The model's folder URL (web-llm adds resolve/main/).
    model_lib: NotRequired[str | None]  # The model library's URL.


@record
class ModelSpec(Struct):
    """What to load. A local folder whose files reach the page as content-addressed blobs (``files`` + ``lib``), an
    MLC prebuilt id the page fetches itself (``prebuilt``), or a model served over HTTP(S) (``url`` + ``lib_url``)."""

    id: str  # Stable id the UI shows and requests name.
    files: NotRequired[list[BlobRef]]  # Local folder: every file with its hash.
    key: NotRequired[str]  # Hash of the folder's manifest: names the folder in the page's cache.
    lib: NotRequired[str]  # Name of the model library (.wasm) among `files`.
    # A CPU folder's relaxed-SIMD build of the library among `files`: the page runs it where WebAssembly has relaxed
    # SIMD (`lib` otherwise) and copies in only the one it runs.
    lib_relaxed_simd: NotRequired[str]
    prebuilt: NotRequired[bool]  # An MLC prebuilt model id (online: fetched from Hugging Face by the page).
    url: NotRequired[str]  # A model served over HTTP(S) in the Hugging Face layout...
    lib_url: NotRequired[str]  # ... and its library's URL.
    overrides: NotRequired[dict[str, Any]]  # Overrides for mlc-chat-config.json (e.g. context_window_size).
    required_features: NotRequired[list[str]]  # WebGPU features the model needs (e.g. shader-f16).
    f32_variant: NotRequired[str | None]  # For an f16-compute model: its f32-compute twin (prebuilt id, or quantization to rebuild a folder with).
    device: NotRequired[Literal["auto", "webgpu", "cpu"]]  # Where to run (default "webgpu"); "cpu" is a model built for the page's CPU.
    cpu: NotRequired[ModelSpec]  # The same model built for the CPU, used when `device` is "auto" and the page has no hardware adapter.
    webgpu: NotRequired[bool]  # false when only the CPU build exists (then "auto" runs it on the CPU whatever the adapter).
    schedule: NotRequired[str]  # The GPU kernel schedule of this spec's library ("auto", "gpu" or "fallback"), when known.
    webgpu_fallback: NotRequired[ModelSpec]  # The same weights with the library built for software adapters (schedule "fallback").
    hub: NotRequired[PrebuiltHub]  # A prebuilt id: where web-llm fetches it from (the page lists and deletes its cached files by these URLs).


@record
class ChatMessage(Struct):
    """A chat message in OpenAI's shape."""

    role: Literal["system", "user", "assistant"]
    content: str


@record
class GenerateSettings(Struct):
    """Sampling settings; unset fields keep the model's defaults."""

    temperature: NotRequired[float]
    top_p: NotRequired[float]
    max_tokens: NotRequired[int]
    seed: NotRequired[int]
    stop: NotRequired[list[str]]
    frequency_penalty: NotRequired[float]
    presence_penalty: NotRequired[float]
    repetition_penalty: NotRequired[float]
    ignore_eos: NotRequired[bool]  # Keep generating past the end-of-sequence token until max_tokens (benchmarks).
    n: NotRequired[int]  # Answers to generate for the same messages (choice i samples with seed + i when a seed is given).
    logprobs: NotRequired[bool]  # Return each token's log-probability, with the `top_logprobs` most likely alternatives.
    top_logprobs: NotRequired[int]
    logit_bias: NotRequired[dict[str, float]]  # Added to the logits of the given token ids before sampling (-100 bans a token, 100 forces it).
    response_format: NotRequired[dict[str, Any]]  # OpenAI's response_format (text, json_object, json_schema), {type: "grammar", grammar: EBNF}, or {type: "tool_calls", ...} (the grammar of tool calls, widgets/tool_calls.py).


@record
class Choice(Struct):
    """One answer among the ``n`` of a request."""

    index: int
    text: str
    finish_reason: str
    logprobs: NotRequired[dict[str, Any] | None]  # {content: [{token, logprob, bytes, token_id, top_logprobs}]} when asked for.


@record
class LoadProgress(Struct):
    """How far a model load got."""

    progress: float  # 0..1
    phase: Literal["install", "fetch", "load", "compile", "done"]
    bytes_done: NotRequired[int]
    bytes_total: NotRequired[int]
    elapsed_s: float
    eta_s: NotRequired[float]  # Estimated seconds left, when known.
    text: str


@record
class GPUInfo(Struct):
    """The page's WebGPU adapter as the engine reports it."""

    vendor: str
    architecture: str
    description: str
    is_fallback: bool
    features: list[str]
    max_buffer_size: NotRequired[int]
    max_storage_buffer_binding_size: NotRequired[int]


@record
class ShaderStats(Struct):
    """Which WebGPU kernels of the model library a load compiled, and which it left for first use
    (js/src/engine/shaders.ts: KV-cache kernels a chat never launches, windowed ones without a sliding window)."""

    library: int  # Kernels in the model library.
    at_load: int  # Kernels compiled while the model loaded.
    deferred: dict[str, str]  # Kernels left for first use: name -> why.
    compiled_later: list[str]  # Of those, the ones compiled since, on first use.
    mode: str  # "deferred", or "all at load: why" when the engine could not leave any out.


@record
class Usage(Struct):
    """Token counts and speeds of one answer."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prefill_tokens_per_s: NotRequired[float]
    decode_tokens_per_s: NotRequired[float]
    time_to_first_token_s: NotRequired[float]
    e2e_latency_s: NotRequired[float]
    # Prompt tokens whose keys and values were already in the KV cache (a prefix shared with what the model last
    # read), so not prefilled and not in prompt_tokens; OpenAI's prompt_tokens_details.cached_tokens.
    cached_tokens: NotRequired[int]
    grammar_init_s: NotRequired[float]  # Compiling response_format's grammar and making its matcher (0 when reused).
    grammar_per_token_s: NotRequired[float]  # The grammar's mask and token check per answer token (CPU time).
    # WebGPU: the decode loop that made the answer: "async" (sampled ids read back one step behind,
    # js/src/engine/async_decode.ts), "async: argmax" (the same loop, greedy: the library's argmax_logits instead of
    # the softmax and argsort), "async: greedy by sampling (why)" (greedy through the sampling kernels: a library
    # without argmax_logits) or "sync: why" (web-llm's own, which waits for each id).
    decode_loop: NotRequired[str]


@record
class LoadedModel(Struct):
    """One model the page's engine holds."""

    key: str
    model: str
    bytes: int


@record
class SwapEvent(Struct):
    """The page unloaded models to make room for another (its memory budget)."""

    unloaded: list[LoadedModel]
    loaded: LoadedModel
    budget_bytes: int
    text: str


@record
class Reloaded(Struct):
    """The model had been unloaded to make room for another and was loaded again for this request."""

    load_s: float


@record
class TensorSpec(Struct):
    """Shape and dtype of one array; its bytes travel as one buffer of the message, in order."""

    shape: list[int]
    dtype: str


@record
class GPUTimings(Struct):
    """Per-run times of a function on the page's GPU."""

    runs_ms: list[float]
    method: Literal["timestamp-query", "wall-clock"]
    detail: str


@record
class AdapterReport(Struct):
    """The WebGPU adapter the GPU widget's page found (GPUAdapterInfo and limits)."""

    vendor: str
    architecture: str
    device: str
    description: str
    isFallbackAdapter: bool
    features: list[str]
    limits: dict[str, float]


@record
class PageInfo(Struct):
    """The page a widget runs in."""

    secure: bool
    userAgent: str


# ---- messages common to the widgets ---------------------------------------------------------------------------

class ErrorMessage(Message):
    """A request failed (with its ``id``), or, without one, a notice to show: the kernel's to the page, or the
    page's about a turn typed there (``origin: "page"``)."""

    KIND = ERROR
    SENDER = "either"
    code: ErrorCode
    message: str  # A sentence a person can act on.
    detail: NotRequired[dict[str, Any]]  # Numbers and names a program can test (e.g. prompt_tokens, file).
    origin: NotRequired[Literal["page"]]


class NeedBlob(Message):
    """The page asks for a blob it does not hold; ``via`` says how it wants it (the HTTP route, or the comm)."""

    KIND = NEED_BLOB
    SENDER = "page"
    sha256: str
    size: int
    name: str
    via: Literal["http", "comm"]
    http_error: NotRequired[str]  # The HTTP route failed for the request `retry_of`: the kernel unpublishes it.
    retry_of: NotRequired[str]


class BlobChunk(Message):
    """Answer to ``need-blob``: one chunk (``offset``, the bytes as the message's buffer), or where the server's
    route serves the whole blob (``url``, no buffer)."""

    KIND = BLOB
    SENDER = "kernel"
    sha256: str
    size: int
    offset: NotRequired[int]
    url: NotRequired[str]


class Ack(Message):
    """The page holds ``received`` bytes (``chunks`` chunks) of a blob; ``via: "http"`` when it fetched it whole."""

    KIND = ACK
    SENDER = "page"
    sha256: str
    received: int
    chunks: int
    via: NotRequired[Literal["http"]]


class Stop(Message):
    """Stop the answer to request ``target`` (all answers when absent)."""

    KIND = STOP
    SENDER = "kernel"
    target: NotRequired[str]


# ---- the Chat widget ----------------------------------------------------------------------------------------------

class ChatReady(Message):
    """The chat page listens."""

    KIND = READY
    SENDER = "page"
    WIDGET = "chat"
    widget: Literal["chat"]
    secure: bool  # A secure context (WebGPU and Cache Storage need one).
    webgpu: bool  # navigator.gpu exists.


class ChatLoad(Message):
    """Load a model into the page's shared engine; the engine bundle comes as a blob first."""

    KIND = LOAD
    SENDER = "kernel"
    WIDGET = "chat"
    engine: BlobRef
    model: ModelSpec
    memory_budget: NotRequired[int]  # Bytes the page's models may take together.


class ChatProgress(LoadProgress, Message):
    """A load's progress (reply to ``load``, or to ``ask`` when the model is loaded again first: ``swap: true``),
    or, without an id, this chat's model was unloaded to make room for another (``phase: "unloaded"``)."""

    KIND = PROGRESS
    SENDER = "page"
    WIDGET = "chat"
    phase: Literal["install", "fetch", "load", "compile", "done", "unloaded"]
    swap: NotRequired[SwapEvent | bool]


class AskReceived(Message):
    """The page got an ``ask`` (its first reply, sent before any work): the kernel fails an ask that no view
    acknowledges with ``view-unreachable`` (a host may deliver a later cell's messages only to the newest output)."""

    KIND = PROGRESS
    SENDER = "page"
    WIDGET = "chat"
    phase: Literal["received"]


class ChatLoadResult(Message):
    """Reply to a chat's ``load``: the model is in."""

    KIND = RESULT
    SENDER = "page"
    WIDGET = "chat"
    model: str
    gpu: GPUInfo
    load_s: float
    bytes_installed: int  # Bytes the host had to bring into the page's cache for this load (0 when all were cached).
    device: Literal["webgpu", "cpu"]  # Which engine runs the model...
    device_reason: str  # ... and why it was chosen.
    schedule: str | None  # The GPU kernel schedule of the library that runs it (WebGPU only).
    # How kernels reach the GPU (WebGPU only): "batched" (the engine's dispatch, js/src/engine/dispatch.ts), or
    # "upstream: why" when tvmjs's own dispatch runs them (a runtime the engine does not know, or asked for).
    dispatch: NotRequired[str]
    # WebGPU: the decode loop answers take: "async" (sampled ids read back one step behind,
    # js/src/engine/async_decode.ts), or "sync: why" (web-llm's own) when the engine cannot install it.
    decode_loop: NotRequired[str]
    # Whether a prompt that starts with tokens already in the KV cache prefills only the rest: "on", or "off: why"
    # (WebGPU: js/src/engine/prefix_cache.ts on web-llm's pipeline; the CPU engine always reuses its cache).
    prompt_cache: NotRequired[str]
    shaders: NotRequired[ShaderStats]  # Kernels compiled at load and left for first use (WebGPU only).
    # On the CPU, which library build runs: "relaxed-simd" (8-bit dot products) or "simd128".
    cpu_build: NotRequired[Literal["relaxed-simd", "simd128"]]


class Ask(Message):
    """Generate an answer to ``messages``; ``user`` is the prompt to show, ``record: false`` keeps it out of the
    conversation (``Chat.complete``)."""

    KIND = ASK
    SENDER = "kernel"
    WIDGET = "chat"
    messages: list[ChatMessage]
    settings: GenerateSettings
    user: str
    record: NotRequired[bool]


class Token(Message):
    """A piece of the answer to ``ask``."""

    KIND = TOKEN
    SENDER = "page"
    WIDGET = "chat"
    text: str


class Done(Message):
    """An answer is complete: to the kernel's ``ask`` (``origin: "kernel"``), or to text typed in the page
    (``origin: "page"``; with ``base`` it replaces ``messages[base:]``: regenerate, edit and resend)."""

    KIND = DONE
    SENDER = "page"
    WIDGET = "chat"
    text: str
    finish_reason: str  # "stop", "length" or "abort".
    usage: Usage
    choices: NotRequired[list[Choice]]  # Every choice, when there are several or they carry logprobs.
    origin: Literal["kernel", "page"]
    user: str
    model: str | None  # The model that answered.
    reloaded: Reloaded | None
    base: NotRequired[int]


class ChatCall(Message):
    """Forget the conversation's KV cache (``reset``), or manage the models the browser caches (``cache``: ``op``
    ``list``, ``delete`` the models ``targets`` name or ``all``, ``persist``)."""

    KIND = CALL
    SENDER = "kernel"
    WIDGET = "chat"
    fn: Literal["reset", "cache"]
    op: NotRequired[Literal["list", "delete", "persist"]]
    targets: NotRequired[list[str]]  # Ids, keys or base URLs of cached models (chat.cache.delete).
    all: NotRequired[bool]  # Delete every cached model and the engine bundle.


class ChatPageCall(Message):
    """The user asked the page for something the kernel does: reset the chat (``reset-request``), or describe the
    built-in model for the picker (``describe-models``)."""

    KIND = CALL
    SENDER = "page"
    WIDGET = "chat"
    fn: Literal["reset-request", "describe-models"]


@record
class CachedModel(Struct):
    """A model (or the blob store) cached for the page's origin."""

    id: str  # The model id, else the base URL its files are under.
    url: str  # The base URL of its files.
    key: NotRequired[str | None]  # A local folder's key.
    kind: Literal["folder", "prebuilt", "url", "blobs"]
    bytes: int
    files: int
    indexed: bool  # Recorded once all its files were stored (false: left by something else).


class ChatCallResult(Message):
    """Reply to the chat's ``call``; for ``cache``, what is cached now and what the operation did."""

    KIND = RESULT
    SENDER = "page"
    WIDGET = "chat"
    models: NotRequired[list[CachedModel]]
    usage: NotRequired[float | None]  # navigator.storage.estimate(): bytes used by the origin...
    quota: NotRequired[float | None]  # ... and allowed.
    persisted: NotRequired[bool | None]  # Whether the origin's storage is persistent.
    deleted: NotRequired[list[CachedModel]]
    granted: NotRequired[bool]  # persist: whether the browser agreed.


# ---- the WebGPU (teaching) widget -------------------------------------------------------------------------------

class GpuReady(Message):
    """The GPU widget's page listens; ``adapter`` is null when it has no WebGPU (``webgpu_error`` says why)."""

    KIND = READY
    SENDER = "page"
    WIDGET = "gpu"
    adapter: AdapterReport | None
    webgpu_error: str
    page: PageInfo


class GpuLoad(Message):
    """Load a compiled library (and, once per page, the tvmjs runtime bundle)."""

    KIND = LOAD
    SENDER = "kernel"
    WIDGET = "gpu"
    runtime: BlobRef
    library: BlobRef


class GpuProgress(Message):
    """How much of a blob of a GPU ``load`` arrived."""

    KIND = PROGRESS
    SENDER = "page"
    WIDGET = "gpu"
    name: str
    received: int
    size: int
    cached: bool


class GpuLoadResult(Message):
    """Reply to a GPU ``load``: the library is ready."""

    KIND = RESULT
    SENDER = "page"
    WIDGET = "gpu"
    sha256: str


class GpuCall(Message):
    """Run function ``fn`` of a loaded library on the arrays in the message's buffers; with ``repeat`` > 0, time it."""

    KIND = CALL
    SENDER = "kernel"
    WIDGET = "gpu"
    library: str  # sha256 of the library
    fn: str
    args: list[TensorSpec]
    repeat: int
    warmup: int


class GpuCallResult(Message):
    """Reply to a GPU ``call``: the outputs (their bytes in the buffers, in order), or the timings."""

    KIND = RESULT
    SENDER = "page"
    WIDGET = "gpu"
    outputs: NotRequired[list[TensorSpec]]
    timings: NotRequired[GPUTimings]


class GpuProfile(Message):
    """Run a model's prefill and ``steps`` decode steps on the page's GPU and time every dispatch; the model's files
    reach the page as a Chat's do (``model``), the tvmjs runtime bundle as ``runtime``."""

    KIND = PROFILE
    SENDER = "kernel"
    WIDGET = "gpu"
    runtime: BlobRef
    model: ModelSpec
    prompt: int  # prompt tokens of the prefill
    steps: int  # decode steps


class GpuProfileResult(Message):
    """Reply to ``profile`` (js/src/teach/profile_model.ts ModelProfile, and which model ran)."""

    KIND = RESULT
    SENDER = "page"
    WIDGET = "gpu"
    timestamps: bool  # GPU times come from timestamp queries (else wall clock only)
    method: str
    peaks: Any  # the adapter's measured read bandwidth and FMA rate
    prompt_tokens: int
    prefill: list[Any]  # one StepProfile per prefill step
    decode: list[Any]  # one StepProfile per decode step: wall_ms and a PassRecord per dispatch
    wgsl: dict[str, str]  # WGSL of every pipeline the library made, by entry point
    meta: Any
    errors: list[str]
    model_key: NotRequired[str]
    model_id: str
    bytes_installed: int


def messages_of(kind: str, sender: str) -> list[type[Message]]:
    """The message classes of ``kind`` that ``sender`` ("kernel" or "page") may send."""
    return [m for m in MESSAGES if m.KIND == kind and m.SENDER in (sender, "either")]


def problems(msg: dict, sender: str) -> list[str]:
    """Why ``msg`` (with its envelope) matches no message of its kind from ``sender``; [] when one matches."""
    candidates = messages_of(str(msg.get("kind")), sender)
    if not candidates:
        return [f"no {sender} sends a {msg.get('kind')!r} message"]
    found = [m.problems(msg) for m in candidates]
    # None matches: report the nearest (fewest unknown fields, then fewest problems)
    return [] if any(not p for p in found) else min(found, key=lambda p: (sum("unknown" in x for x in p), len(p)))
