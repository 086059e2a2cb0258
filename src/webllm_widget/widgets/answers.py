"""The answers of a chat: one :class:`ChatHandle` per question, an :class:`AnswerQueue` that runs them one at a
time in the order asked, and the :class:`ContextOverflow` policy for a question that outgrows the model's
context window.

The queue talks to the page only through a :class:`~webllm_widget.protocol.Channel` (``request`` and ``send``)
and to the widget only through the callbacks it is given, so it runs without a widget or a browser page.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

from ..errors import BadModel, ViewUnreachable
from ..protocol import ASK, STOP, _settle, new_id
from ..wire.schema import Ask, Stop

#: Seconds an answer may take (software WebGPU decodes a few tokens a second).
ANSWER_TIMEOUT = 3600.0
#: Seconds within which a view must acknowledge an ask (the page does so before anything else); past it the
#: answer fails with ViewUnreachable instead of waiting for an answer that no view will give.
RECEIPT_TIMEOUT = 10.0
VIEW_HINT = ("no view of this chat received the question. Colab delivers the messages of a later cell only to "
             "that cell's own output, so a chat shown by an earlier cell never sees them; elsewhere the chat may "
             "not be shown at all. Show it again in the cell that asks, and ask after that view has loaded: "
             "`await chat.show()`, then `await chat.ask(...)` in the same cell.")


class ChatHandle:
    """One answer in flight, returned by :meth:`Chat.send`.

    ``await handle`` gives the full text; ``handle.text`` is what arrived so far; ``handle.done()``
    says whether it finished; ``handle.stop()`` ends it early (the partial answer is kept).
    ``handle.result`` is the ``done`` payload (``text``, ``finish_reason``, ``usage``) once finished.
    ``handle.dropped_turns`` counts the earlier turns left out to fit the context window.
    """

    def __init__(self, chat: Any, prompt: str | None, on_token: Callable[[str], Any] | None,
                 on_done: Callable[[str], Any] | None, *, queue: "AnswerQueue",
                 messages: list[dict] | Callable[[], list[dict]], settings: dict, records: bool):
        self.chat = chat
        self.prompt = prompt
        #: Whether the turn is added to the chat's ``messages`` when it completes.
        self.records = records
        self.id = new_id("ask")
        self.text = ""
        self.tokens: list[str] = []
        self.result: dict | None = None
        self.error: BaseException | None = None
        self.dropped_turns = 0
        self.t_sent = time.perf_counter()
        self.t_first: float | None = None
        self._queue = queue
        # A function while queued: a queued turn sees the turns answered before it.
        self._messages = messages
        self._settings = settings
        self._on_token = on_token
        self._on_done = on_done
        self._done = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._queues: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []

    def done(self) -> bool:
        return self._done

    def stop(self) -> None:
        """Stop this answer; it finishes with ``finish_reason == "abort"`` and the text so far."""
        if not self._done:
            self._queue.stop(self)

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
            from ..hosts import refuse_await

            refuse_await("awaiting an answer inside a cell")
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            self._waiters.append((loop, fut))
            await fut
        if self.error is not None:
            raise self.error
        return self.text

    def __await__(self):
        return self.wait().__await__()

    def token_queue(self) -> asyncio.Queue:
        """A queue of this answer's pieces on the running loop (those that came already first); ``None`` ends it."""
        from ..hosts import refuse_await

        if not self._done:
            refuse_await("streaming an answer inside a cell")
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        for tok in self.tokens:
            q.put_nowait(tok)
        if self._done:
            q.put_nowait(None)
        else:
            self._queues.append((loop, q))
        return q

    def __repr__(self) -> str:
        state = "done" if self._done else "running"
        return f"<ChatHandle {self.id} {state}: {self.text[:60]!r}>"


class ContextOverflow:
    """What an answer does when the page says its messages outgrow the model's context window
    (error code ``context-overflow``): ``"error"`` lets the error stand; ``"drop-oldest"`` asks again without the
    older half of the earlier turns, as long as no token of the answer arrived and a turn is left to drop."""

    MODES = ("error", "drop-oldest")

    def __init__(self, mode: str = "error"):
        if mode not in self.MODES:
            raise ValueError(f"context overflow mode must be one of {self.MODES}, not {mode!r}")
        self.mode = mode

    def retry(self, error: BaseException | None, messages: list[dict], streamed: bool) -> list[dict] | None:
        """The messages to ask again with after ``error``, or None to end the answer with it."""
        if (error is None or getattr(error, "code", "") != "context-overflow" or self.mode != "drop-oldest"
                or streamed):
            return None
        return drop_oldest_turn(messages)


def drop_oldest_turn(messages: list[dict]) -> list[dict] | None:
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


def _user_turns(messages: list[dict]) -> int:
    return sum(1 for m in messages if m.get("role") == "user")


class AnswerQueue:
    """Runs a chat's answers one at a time, in the order asked (answers never interleave in the page).

    ``load()`` gives the reply of the model load in flight or done (None when nothing loads); an answer waits
    for it and fails with its error. ``on_asking(handle)`` runs when a question goes to the page (again after
    an overflow retry); ``on_answered(handle, result, error)`` when the page's reply ends it, before the
    handle finishes. ``on_progress(handle, msg)`` sees the page's progress while an answer waits for its model
    (loaded again after the page unloaded it to make room for another). ``overflow`` is the
    :class:`ContextOverflow` policy applied to each reply.
    """

    def __init__(self, channel: Any, *, load: Callable[[], Any], owner: Any = None,
                 on_asking: Callable[[ChatHandle], None] = lambda h: None,
                 on_answered: Callable[[ChatHandle, dict | None, BaseException | None], None] = lambda h, r, e: None,
                 on_progress: Callable[[ChatHandle, dict], None] = lambda h, m: None,
                 overflow: ContextOverflow | None = None):
        self._ch = channel
        self._on_progress = on_progress
        self._load = load
        self._owner = owner
        self._on_asking = on_asking
        self._on_answered = on_answered
        self.overflow = overflow or ContextOverflow()
        self._handles: dict[str, ChatHandle] = {}
        self._running: ChatHandle | None = None
        self._waiting: list[ChatHandle] = []  # asked while another answer ran: started in order
        self.receipt_timeout = RECEIPT_TIMEOUT

    @property
    def running(self) -> ChatHandle | None:
        return self._running

    @property
    def waiting(self) -> list[ChatHandle]:
        return list(self._waiting)

    def submit(self, user: str | None, messages: list[dict] | Callable[[], list[dict]], settings: dict,
               on_token: Callable[[str], Any] | None = None, on_done: Callable[[str], Any] | None = None, *,
               record: bool) -> ChatHandle:
        """Start an answer, or queue it behind the one running. ``messages`` may be a function, called when the
        answer starts."""
        h = ChatHandle(self._owner, user, on_token, on_done, queue=self, messages=messages, settings=settings,
                       records=record)
        self._handles[h.id] = h
        if self._running is not None and not self._running.done():
            self._waiting.append(h)
        else:
            self._start(h)
        return h

    def stop(self, h: ChatHandle) -> None:
        """End ``h``: a queued answer finishes at once as aborted and empty, a running one is stopped in the page."""
        if h in self._waiting:  # never sent to the page
            self._waiting.remove(h)
            self._handles.pop(h.id, None)
            h._finish({"text": "", "finish_reason": "abort", "usage": {}}, None)
            return
        self._ch.send(STOP, Stop(target=h.id))

    def stop_all(self) -> None:
        """Stop the running answer (or whatever the page generates) and drop the queued ones."""
        for h in list(self._waiting):
            h.stop()
        if self._running is not None:
            self._running.stop()
        else:
            self._ch.send(STOP, Stop())

    def fail_all(self, error: Callable[[], BaseException]) -> None:
        """End every unfinished answer with a new ``error()`` (the page that ran them is gone)."""
        for h in list(self._handles.values()):
            h._finish(None, error())
        self._handles.clear()
        self._waiting.clear()
        self._running = None

    def _start(self, h: ChatHandle) -> None:
        self._running = h

        def go(_reply=None) -> None:
            if _reply is not None and _reply.exception() is not None:
                self._end(h, None, _reply.exception())
                return
            if callable(h._messages):
                h._messages = h._messages()
            self._ask(h)

        load = self._load()
        if load is None:
            self._end(h, None, BadModel("no model is loading or loaded: call chat.load(model)"))
        elif not load.done():
            load.add_done_callback(go)  # ask once the model is in
        else:
            go(load)

    def _ask(self, h: ChatHandle) -> None:
        self._on_asking(h)
        received = [False]

        def on_event(m: dict, _buffers: list) -> None:
            received[0] = True
            if m.get("kind") == "token":
                h._token(str(m.get("text", "")))
            elif m.get("kind") == "progress" and m.get("phase") != "received":
                self._on_progress(h, m)

        reply = self._ch.request(ASK, Ask(messages=h._messages, settings=h._settings, user=h.prompt or "",
                                          record=h.records), id=h.id, timeout=ANSWER_TIMEOUT, on_event=on_event)
        reply.add_done_callback(lambda r: self._on_reply(h, r))

        from ..hosts import in_marimo

        if in_marimo():
            return  # marimo holds the receipt while any cell runs: an answer's own timeout applies there
        try:  # on the loop that runs this chat's callbacks (the kernel's, or a test host's)
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop in this thread: the answer's own timeout applies

        def unacknowledged(due: float) -> None:
            if received[0] or reply.done() or not self._ch.is_ready:
                return
            if loop.time() - due > 1.0:
                # the loop was blocked (a cell that does not yield): the receipt may be waiting right behind this
                # callback, so give it a full period of a free loop before deciding
                loop.call_later(self.receipt_timeout, unacknowledged, loop.time() + self.receipt_timeout)
                return
            self._ch.send(STOP, Stop(target=h.id))  # should it arrive after all, nobody waits for it
            self._ch.cancel(h.id, ViewUnreachable(VIEW_HINT, detail={"id": h.id}))

        loop.call_later(self.receipt_timeout, unacknowledged, loop.time() + self.receipt_timeout)

    def _on_reply(self, h: ChatHandle, reply) -> None:
        err = reply.exception()
        shorter = self.overflow.retry(err, h._messages, streamed=bool(h.tokens))
        if shorter is not None:  # ask again with fewer turns (web-llm re-prefills the shorter history)
            h.dropped_turns += _user_turns(h._messages) - _user_turns(shorter)
            h._messages = shorter
            self._ask(h)
            return
        if err is not None:
            self._end(h, None, err, answered=True)
            return
        msg, _ = reply.result()
        result = {k: v for k, v in msg.items() if k not in ("v", "kind", "id")}
        if h.dropped_turns:
            result["dropped_turns"] = h.dropped_turns
        self._end(h, result, None, answered=True)

    def _end(self, h: ChatHandle, result: dict | None, err: BaseException | None, answered: bool = False) -> None:
        self._handles.pop(h.id, None)
        if self._running is h:
            self._running = None
        if answered:
            self._on_answered(h, result, err)
        h._finish(result, err)
        self._next()

    def _next(self) -> None:
        while self._waiting and (self._running is None or self._running.done()):
            h = self._waiting.pop(0)
            if not h.done():
                self._start(h)
