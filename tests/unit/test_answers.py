"""The answer queue, the answer handle and the context-overflow policy of ``Chat``, without a widget or a browser:
a real :class:`~webllm_widget.protocol.Channel` on a recording stand-in for the widget, the test playing the page."""
from __future__ import annotations

import asyncio

import pytest

from webllm_widget._aio import run as run_async
from webllm_widget.errors import BadModel, ContextWindowExceeded, WebLLMWidgetError
from webllm_widget.protocol import PROTOCOL_VERSION, Channel
from webllm_widget.widgets.answers import AnswerQueue, ContextOverflow, drop_oldest_turn


class Page:
    """Plays the page at the other end of a real Channel: records what the kernel sends, answers by id."""

    def __init__(self):
        self.sent: list[dict] = []
        self._cb = None
        self.channel = Channel(self)
        self.says("ready")

    # the widget side the Channel uses
    def on_msg(self, cb):
        self._cb = cb

    def send(self, msg, buffers=None):
        self.sent.append(msg)

    # the page side the test drives
    def says(self, kind, **payload):
        self._cb(self, {"v": PROTOCOL_VERSION, "kind": kind, **payload}, [])

    def asks(self) -> list[dict]:
        return [m for m in self.sent if m["kind"] == "ask"]

    def stops(self) -> list[dict]:
        return [m for m in self.sent if m["kind"] == "stop"]


def _queue(page: Page, load=None, **kw):
    """A queue whose model load is ``load`` (a Reply; default: a load the page already answered)."""
    if load is None:
        load = page.channel.request("load", {})
        page.says("result", id=load.id)
    events: list[tuple] = []
    q = AnswerQueue(page.channel, load=lambda: load, on_asking=lambda h: events.append(("asking", h.id)),
                    on_answered=lambda h, r, e: events.append(("answered", h.id, r, e, h.done())), **kw)
    return q, events


def _turns(n: int) -> list[dict]:
    msgs = []
    for i in range(n):
        msgs += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    return msgs


def test_answers_run_one_at_a_time_in_the_order_asked_and_a_queued_one_sees_the_earlier_answer():
    page = Page()
    q, events = _queue(page)
    history: list[str] = []
    a = q.submit("one", [{"role": "user", "content": "one"}], {"temperature": 0}, record=True)
    b = q.submit("two", lambda: [{"role": "user", "content": f"two after {history}"}], {}, record=True)
    assert [m["id"] for m in page.asks()] == [a.id]  # b waits
    assert q.running is a and q.waiting == [b]
    assert page.asks()[0]["messages"] == [{"role": "user", "content": "one"}]
    assert page.asks()[0]["settings"] == {"temperature": 0} and page.asks()[0]["record"] is True
    page.says("token", id=a.id, text="Par")
    page.says("token", id=a.id, text="is")
    assert a.text == "Paris" and a.tokens == ["Par", "is"] and not a.done()
    history.append(a.text)
    page.says("done", id=a.id, text="Paris", finish_reason="stop", usage={"completion_tokens": 2})
    assert a.done() and a.result == {"text": "Paris", "finish_reason": "stop", "usage": {"completion_tokens": 2}}
    # b started only now, and its messages were made when it started
    assert [m["id"] for m in page.asks()] == [a.id, b.id]
    assert page.asks()[1]["messages"] == [{"role": "user", "content": "two after ['Paris']"}]
    assert q.running is b
    # the widget hears of each ask and each end, the end before the handle finishes
    assert events[:3] == [("asking", a.id), ("answered", a.id, a.result, None, False), ("asking", b.id)]


def test_stopping_a_queued_answer_ends_it_at_once_and_nothing_reaches_the_page():
    page = Page()
    q, events = _queue(page)
    a = q.submit("one", [{"role": "user", "content": "one"}], {}, record=True)
    b = q.submit("two", [{"role": "user", "content": "two"}], {}, record=True)
    b.stop()
    assert b.done() and b.result == {"text": "", "finish_reason": "abort", "usage": {}} and b.error is None
    assert page.stops() == [] and q.waiting == []
    a.stop()  # running: the page is told to stop it
    assert page.stops() == [{"v": PROTOCOL_VERSION, "kind": "stop", "target": a.id}]
    page.says("done", id=a.id, text="Pa", finish_reason="abort", usage={})
    assert run_async(a.wait()) == "Pa"
    assert [m["id"] for m in page.asks()] == [a.id]  # b never went


def test_stop_all_drops_the_queue_and_stops_the_running_answer_or_the_page():
    page = Page()
    q, _ = _queue(page)
    q.stop_all()  # nothing running: the page is told to stop whatever it generates
    assert page.stops()[-1] == {"v": PROTOCOL_VERSION, "kind": "stop"}
    a = q.submit("one", [{"role": "user", "content": "one"}], {}, record=True)
    b = q.submit("two", [{"role": "user", "content": "two"}], {}, record=True)
    c = q.submit("three", [{"role": "user", "content": "three"}], {}, record=True)
    q.stop_all()
    assert b.done() and c.done() and not a.done()
    assert page.stops()[-1]["target"] == a.id and len(page.stops()) == 2


def test_an_answer_without_a_load_fails_with_bad_model_and_the_next_one_still_runs():
    page = Page()
    load = None
    q = AnswerQueue(page.channel, load=lambda: load)
    a = q.submit("one", [{"role": "user", "content": "one"}], {}, record=True)
    assert a.done() and isinstance(a.error, BadModel)
    with pytest.raises(BadModel):
        run_async(a.wait())
    load = page.channel.request("load", {})
    b = q.submit("two", [{"role": "user", "content": "two"}], {}, record=True)
    assert page.asks() == [] and not b.done()  # waits for the load
    page.says("result", id=load.id)
    assert [m["id"] for m in page.asks()] == [b.id]


def test_a_failed_load_fails_the_waiting_answers_with_its_error():
    page = Page()
    load = page.channel.request("load", {})
    q, events = _queue(page, load=load)
    a = q.submit("one", [{"role": "user", "content": "one"}], {}, record=True)
    b = q.submit("two", [{"role": "user", "content": "two"}], {}, record=True)
    page.says("error", id=load.id, code="no-webgpu", message="no adapter")
    assert a.error.code == b.error.code == "no-webgpu" and page.asks() == []
    assert events == []  # the page never answered: nothing for the widget to record


def test_a_page_error_ends_the_answer_and_reaches_the_widget():
    page = Page()
    q, events = _queue(page)
    done = []
    a = q.submit("one", [{"role": "user", "content": "one"}], {}, on_done=done.append, record=True)
    page.says("error", id=a.id, code="device-lost", message="gone")
    assert a.error.code == "device-lost" and done == []
    assert events[-1][:2] == ("answered", a.id) and events[-1][3] is a.error


def test_fail_all_ends_every_answer_with_its_own_error():
    page = Page()
    q, _ = _queue(page)
    hs = [q.submit(p, [{"role": "user", "content": p}], {}, record=True) for p in ("a", "b")]
    q.fail_all(lambda: WebLLMWidgetError("reloaded", code="page-reloaded"))
    assert [h.error.code for h in hs] == ["page-reloaded"] * 2 and hs[0].error is not hs[1].error
    assert q.running is None and q.waiting == []


def test_token_queue_gives_the_pieces_that_came_before_and_after_then_none():
    page = Page()
    q, _ = _queue(page)
    a = q.submit("one", [{"role": "user", "content": "one"}], {}, record=True)
    page.says("token", id=a.id, text="A")

    async def read():
        tq = a.token_queue()
        page.says("token", id=a.id, text="B")
        page.says("done", id=a.id, text="AB", finish_reason="stop", usage={})
        out = []
        while (tok := await asyncio.wait_for(tq.get(), 5)) is not None:
            out.append(tok)
        return out

    assert run_async(read()) == ["A", "B"]


def test_drop_oldest_retries_with_fewer_turns_and_counts_them():
    page = Page()
    q, events = _queue(page, overflow=ContextOverflow("drop-oldest"))
    msgs = [{"role": "system", "content": "s"}, *_turns(4), {"role": "user", "content": "now"}]
    a = q.submit("now", msgs, {}, record=True)
    page.says("error", id=a.id, code="context-overflow", message="too long")
    assert not a.done() and len(page.asks()) == 2
    second = page.asks()[1]["messages"]
    assert second == [{"role": "system", "content": "s"}, *_turns(4)[4:], {"role": "user", "content": "now"}]
    page.says("done", id=a.id, text="ok", finish_reason="stop", usage={})
    assert a.dropped_turns == 2 and a.result["dropped_turns"] == 2 and a.text == "ok"
    assert [e[0] for e in events] == ["asking", "asking", "answered"]


def test_overflow_stands_in_error_mode_after_a_token_and_when_no_turn_is_left():
    for policy, tokens, msgs in [("error", [], _turns(2) + [{"role": "user", "content": "q"}]),
                                 ("drop-oldest", ["x"], _turns(2) + [{"role": "user", "content": "q"}]),
                                 ("drop-oldest", [], [{"role": "user", "content": "q"}])]:
        page = Page()
        q, _ = _queue(page, overflow=ContextOverflow(policy))
        a = q.submit("q", msgs, {}, record=True)
        for tok in tokens:
            page.says("token", id=a.id, text=tok)
        page.says("error", id=a.id, code="context-overflow", message="too long")
        assert isinstance(a.error, ContextWindowExceeded) and len(page.asks()) == 1, policy


def test_the_overflow_policy_retries_only_context_overflow():
    policy = ContextOverflow("drop-oldest")
    msgs = _turns(1) + [{"role": "user", "content": "q"}]
    assert policy.retry(ContextWindowExceeded("x"), msgs, streamed=False) == [{"role": "user", "content": "q"}]
    assert policy.retry(WebLLMWidgetError("x", code="device-lost"), msgs, streamed=False) is None
    assert policy.retry(None, msgs, streamed=False) is None
    with pytest.raises(ValueError):
        ContextOverflow("drop-newest")


def test_drop_oldest_turn_halves_the_earlier_turns_and_keeps_system_messages_and_the_question():
    q = {"role": "user", "content": "q"}
    sys_ = {"role": "system", "content": "s"}
    assert drop_oldest_turn([q]) is None
    assert drop_oldest_turn([sys_, q]) is None
    assert drop_oldest_turn([*_turns(1), q]) == [q]
    assert drop_oldest_turn([sys_, *_turns(3), q]) == [sys_, *_turns(3)[4:], q]  # 2 of 3 earlier turns
    assert drop_oldest_turn([*_turns(5), q]) == [*_turns(5)[6:], q]  # 3 of 5
