"""Stop and interleaving: rapid send/stop cycles and concurrent asks leave a consistent state, and the next
answer equals a fresh greedy run."""
from __future__ import annotations

import asyncio
import random

import pytest

from rel_host import fresh

pytestmark = pytest.mark.browser


def test_fifty_rapid_send_stop_cycles_leave_a_consistent_chat(rel, tiny_folder):
    chat = rel.chat(tiny_folder, temperature=0, max_tokens=12)
    rng = random.Random(6)

    async def go():
        results = []
        for i in range(50):
            if i % 5 == 0:  # stopped turns are kept: keep the conversation inside the 256-token window
                chat.reset()
            h = chat.send(f"count {i}")
            wait = rng.choice([0, 0, 1, 2])  # stop before it starts, or after a token or two
            while len(h.tokens) < wait and not h.done():
                await asyncio.sleep(0.005)
            h.stop()
            await h
            results.append(h.result)
        # a burst: ten sends at once, each stopped at once (queued ones never reach the page)
        burst = [chat.send(f"burst {i}") for i in range(10)]
        for h in burst:
            h.stop()
        burst_texts = [await h for h in burst]
        chat.reset()
        text = await chat.ask("hello", max_tokens=6)
        ref = await fresh(chat, [{"role": "user", "content": "hello"}], max_tokens=6)
        return results, burst, burst_texts, text, ref

    results, burst, burst_texts, text, ref = rel.run(go(), timeout=600)
    assert all(r["finish_reason"] in ("abort", "stop", "length") for r in results)
    assert sum(r["finish_reason"] == "abort" for r in results) >= 40
    assert all(h.done() and h.result["finish_reason"] == "abort" for h in burst)
    assert chat.status == "ready" and chat.error == {}
    assert chat.messages == [{"role": "user", "content": "hello"}, {"role": "assistant", "content": text}]
    assert text == ref


def test_two_concurrent_asks_run_in_order_without_interleaving(rel, tiny_folder):
    chat = rel.chat(tiny_folder, temperature=0, max_tokens=8)
    timeline: list[tuple[str, str]] = []

    async def go():
        chat.reset()
        h1 = chat.send("first question", on_token=lambda t: timeline.append(("first", t)))
        h2 = chat.send("second question", on_token=lambda t: timeline.append(("second", t)))
        t1, t2 = await asyncio.gather(h1, h2)
        convo = [{"role": "user", "content": "first question"}, {"role": "assistant", "content": t1},
                 {"role": "user", "content": "second question"}]
        ref2 = await fresh(chat, convo, max_tokens=8)
        return h1, h2, t1, t2, ref2

    h1, h2, t1, t2, ref2 = rel.run(go())
    who = [w for w, _ in timeline]
    assert who == sorted(who, key=lambda w: w != "first"), who  # every 'first' token before any 'second'
    assert "".join(t for w, t in timeline if w == "first") == t1
    assert "".join(t for w, t in timeline if w == "second") == t2
    assert [m["content"] for m in chat.messages] == ["first question", t1, "second question", t2]
    assert t2 == ref2  # the second answer saw the first turn, as a fresh run of the whole conversation does
