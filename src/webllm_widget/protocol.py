"""The messages between kernel and page: envelope, and the kernel end of a widget's channel.

The kinds, the protocol version and each message's fields are defined in :mod:`webllm_widget.wire.schema`
(the page's ``js/src/wire/schema.gen.ts`` is generated from it); ``js/src/protocol.ts`` is the page's end.

Every message is a dict ``{"v": 1, "kind": ..., "id": ..., **payload}`` sent as an anywidget custom
message, with binary payloads as buffers (never JSON number lists). A request carries an ``id``;
every reply (``progress``, ``token``, and finally ``result``, ``done`` or ``error``)
carries the same ``id``. The page sends ``ready`` once its handlers listen; until then the kernel
queues what it sends (some hosts drop messages sent earlier).

While a notebook cell runs, the kernel handles widget messages only when the cell yields to the
event loop: ``await reply`` does, ``time.sleep`` does not. Replies can also be taken with callbacks.

Example::

    ch = Channel(widget)                       # in the widget's __init__
    reply = ch.request("call", {"fn": "main"}, buffers=[memoryview(x)])
    msg, buffers = await reply                 # raises the matching webllm_widget.errors class
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from typing import Any, Callable, Sequence

from .errors import PageReloaded, PageTimeout, ProtocolMismatch, WebLLMWidgetError, from_page
# The kinds and the fields of each message are defined in wire/schema.py (and generated for the page from there).
from .wire.schema import (  # noqa: F401  (re-exported: the protocol's names)
    ACK, ASK, BLOB, CALL, DONE, ERROR, FINAL_KINDS, KINDS, LOAD, NEED_BLOB, PROGRESS, PROTOCOL_VERSION, READY, RESULT,
    PROFILE, STOP, TOKEN, ErrorMessage,
)
from .wire.schema import problems as _problems

log = logging.getLogger(__name__)

Handler = Callable[[dict, list], None]

_ids = itertools.count(1)


def new_id(prefix: str = "k") -> str:
    """A request id unique in this kernel."""
    return f"{prefix}{next(_ids)}"


def message(kind: str, payload: dict | None = None, *, id: str | None = None) -> dict:
    """Build an envelope; raises ValueError for an unknown kind (a typo should fail loudly)."""
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind!r}; known: {', '.join(KINDS)}")
    msg = dict(payload or {})
    msg["v"] = PROTOCOL_VERSION
    msg["kind"] = kind
    if id is not None:
        msg["id"] = id
    return msg


class Reply:
    """The answer to one request: awaitable, or observed with callbacks.

    ``await reply`` gives ``(msg, buffers)`` of the final reply or raises the error the page sent
    (as the matching :mod:`webllm_widget.errors` class). ``on_event`` callbacks given to
    :meth:`Channel.request` see the intermediate replies (``progress``, ``token``).
    """

    def __init__(self, id: str, kind: str, timeout: float | None = None):
        self.id = id
        self.kind = kind
        self.timeout = timeout
        self.sent_at = time.monotonic()
        self._done = False
        self._value: tuple[dict, list] | None = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Reply], None]] = []
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._lock = threading.Lock()

    def done(self) -> bool:
        return self._done

    def result(self) -> tuple[dict, list]:
        """The final reply; raises the page's error, or RuntimeError if not done yet."""
        if not self._done:
            raise RuntimeError(f"request {self.id} ({self.kind}) has no reply yet")
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value

    def exception(self) -> BaseException | None:
        return self._error if self._done else None

    def add_done_callback(self, fn: Callable[[Reply], None]) -> None:
        with self._lock:
            if not self._done:
                self._callbacks.append(fn)
                return
        fn(self)

    def _finish(self, value: tuple[dict, list] | None, error: BaseException | None) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
            self._value, self._error = value, error
            callbacks, self._callbacks = self._callbacks, []
            waiters, self._waiters = self._waiters, []
        # Callbacks first: they record what the reply means (a load's report, an answer's turn). A waiter may sit
        # on another thread's loop (ipykernel 7 delivers comm messages off the cell's loop), and woken first it
        # could read that state before it is written: `await chat.ready()` returned {} that way in JupyterLab.
        for fn in callbacks:
            fn(self)
        for loop, fut in waiters:
            # Resolve on the future's own loop, from whichever thread delivered the message.
            loop.call_soon_threadsafe(_settle, fut, value, error)

    async def wait(self, timeout: float | None = None) -> tuple[dict, list]:
        """Wait for the final reply, yielding to the event loop (so widget messages get through).

        Where the host holds the page's messages until the running cell ends (marimo), a wait that has not
        finished yet raises :class:`~webllm_widget.errors.HostHoldsMessages` at once instead of never ending.
        """
        if not self._done:
            from .hosts import refuse_await

            refuse_await(f"awaiting the page's {self.kind!r} reply inside a cell")
        loop = asyncio.get_running_loop()
        with self._lock:
            if not self._done:
                fut = loop.create_future()
                self._waiters.append((loop, fut))
            else:
                fut = None
        if fut is not None:
            t = self.timeout if timeout is None else timeout
            try:
                await asyncio.wait_for(asyncio.shield(fut), t)
            except asyncio.TimeoutError:
                raise PageTimeout(
                    f"the page did not answer {self.kind!r} within {t:.0f} s. Is the widget displayed in a "
                    "notebook open in a browser? (nbconvert and plain Python have no page.)",
                    detail={"id": self.id, "kind": self.kind},
                ) from None
        return self.result()

    def __await__(self):
        return self.wait().__await__()


def _settle(fut: asyncio.Future, value, error) -> None:
    """Resolve ``fut`` once, with ``value`` or ``error`` (later calls are ignored). Shared with chat.py."""
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)


class Channel:
    """The kernel end of one widget's message channel.

    Attach it to an ``anywidget.AnyWidget`` (or ipywidgets ``DOMWidget``) in the widget's
    ``__init__``. It queues outgoing messages until the page says ``ready``, matches replies to
    requests by id, and counts the buffer bytes it sends (:attr:`bytes_sent`).

    Every message either way is checked against :mod:`webllm_widget.wire.schema`; one that matches no message
    of its kind (a field one side added alone) is logged and kept in :attr:`wire_problems`, and still delivered.
    """

    def __init__(self, widget: Any, *, check: bool = True):
        self.widget = widget
        self.check = check                    # False for a widget with messages of its own (a benchmark's)
        self.page: dict = {}                  # the payload of the page's latest `ready`
        self.ready_count = 0                  # how many times a page said ready (reloads count)
        self.bytes_sent = 0                   # buffer bytes sent to the page
        self.bytes_received = 0
        self.wire_problems: list[str] = []    # messages, either way, that do not match the wire schema
        self._queue: list[tuple[dict, list]] = []
        self._pending: dict[str, tuple[Reply, Callable[[dict, list], None] | None]] = {}
        self._handlers: dict[str, list[Handler]] = {}
        self._ready_reply = Reply("ready", READY)
        self._on_ready: list[Callable[[dict], None]] = []
        widget.on_msg(self._on_widget_msg)

    # -- state ---------------------------------------------------------------------------------

    @property
    def is_ready(self) -> bool:
        return self.ready_count > 0

    def on_ready(self, fn: Callable[[dict], None]) -> None:
        """Call ``fn(page_info)`` on every ``ready`` (each page load or reload)."""
        self._on_ready.append(fn)

    async def wait_ready(self, timeout: float = 60.0) -> dict:
        """Wait until a page listens; returns its ``ready`` payload."""
        if self.is_ready:
            return self.page
        self._ready_reply.timeout = timeout
        msg, _ = await self._ready_reply
        return msg

    # -- sending --------------------------------------------------------------------------------

    def send(self, kind: str, payload: dict | None = None, buffers: Sequence[Any] | None = None,
             *, id: str | None = None) -> None:
        """Send one message (queued until the page is ready). Buffers: bytes-like, sent without copies."""
        msg = message(kind, payload, id=id)
        self._check(msg, "kernel")
        bufs = list(buffers or [])
        if self.is_ready:
            self._send_now(msg, bufs)
        else:
            self._queue.append((msg, bufs))

    def request(self, kind: str, payload: dict | None = None, buffers: Sequence[Any] | None = None, *,
                on_event: Callable[[dict, list], None] | None = None, timeout: float | None = 120.0,
                id: str | None = None) -> Reply:
        """Send a request and return its :class:`Reply`. ``on_event(msg, buffers)`` sees non-final replies."""
        rid = id or new_id()
        reply = Reply(rid, kind, timeout)
        self._pending[rid] = (reply, on_event)
        self.send(kind, payload, buffers, id=rid)
        return reply

    def cancel(self, id: str, error: BaseException | None = None) -> None:
        """Forget a pending request, failing its Reply (default: Aborted)."""
        entry = self._pending.pop(id, None)
        if entry:
            from .errors import Aborted

            entry[0]._finish(None, error or Aborted("the request was cancelled"))

    def notify_error(self, err: WebLLMWidgetError) -> None:
        """Show an error that the kernel detected in the widget (an ``error`` message without id)."""
        self.send(ERROR, ErrorMessage(code=err.code, message=err.args[0] if err.args else str(err)))

    def _send_now(self, msg: dict, buffers: list) -> None:
        self.bytes_sent += sum(memoryview(b).nbytes for b in buffers)
        self.widget.send(msg, buffers=buffers or None)

    # -- receiving ------------------------------------------------------------------------------

    def on(self, kind: str, handler: Handler) -> Callable[[], None]:
        """Handle every incoming ``kind`` message not consumed as a reply. Returns an unsubscribe function."""
        self._handlers.setdefault(kind, []).append(handler)
        return lambda: self._handlers.get(kind, []).remove(handler)

    def _on_widget_msg(self, _widget: Any, content: Any, buffers: list | None) -> None:
        if not isinstance(content, dict) or "kind" not in content:
            return
        bufs = list(buffers or [])
        self.bytes_received += sum(memoryview(b).nbytes for b in bufs)
        self.dispatch(content, bufs)

    def dispatch(self, msg: dict, buffers: list) -> None:
        """Route one message from the page (also used by test hosts that carry messages themselves)."""
        kind = msg.get("kind")
        if msg.get("v") != PROTOCOL_VERSION:
            err = ProtocolMismatch(
                f"the page speaks protocol v{msg.get('v')} but this kernel speaks v{PROTOCOL_VERSION}: "
                "reload the page after upgrading webllm-widget")
            self._fail_all(err)
            return
        self._check(msg, "page")
        if kind == READY:
            self._handle_ready(msg)
            return
        rid = msg.get("id")
        entry = self._pending.get(rid) if rid is not None else None
        if entry is not None:
            reply, on_event = entry
            if kind == ERROR:
                self._pending.pop(rid, None)
                reply._finish(None, from_page(msg))
                return
            if kind in FINAL_KINDS:
                self._pending.pop(rid, None)
                reply._finish((msg, buffers), None)
                return
            if on_event is not None:
                on_event(msg, buffers)
                return
        for handler in list(self._handlers.get(kind, ())):
            handler(msg, buffers)

    def _handle_ready(self, msg: dict) -> None:
        self.page = msg
        first = self.ready_count == 0
        self.ready_count += 1
        if not first:
            # A new page (reload, second window) knows nothing of earlier requests: fail them.
            for rid in [r for r, (rep, _) in self._pending.items()]:
                reply, _ = self._pending.pop(rid)
                reply._finish(None, PageReloaded("the page was reloaded while this request ran; run it again"))
        queued, self._queue = self._queue, []
        for m, b in queued:
            self._send_now(m, b)
        self._ready_reply._finish((msg, []), None)
        for fn in list(self._on_ready):
            fn(msg)

    def _check(self, msg: dict, sender: str) -> None:
        if not self.check:
            return
        found = _problems(msg, sender)
        if found:
            line = f"{sender} sent a {msg.get('kind')!r} message the wire schema does not describe: {'; '.join(found)}"
            if line not in self.wire_problems:
                self.wire_problems.append(line)
                log.warning("%s (webllm_widget/wire/schema.py describes each message)", line)

    def _fail_all(self, err: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for reply, _ in pending.values():
            reply._finish(None, err)

