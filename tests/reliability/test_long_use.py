"""Long use and reload: 30 turns and one long generation with bounded page heap growth; after a page reload
the displayed Chat reconnects, shows the conversation it had and answers again."""
from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.browser

#: Allowed growth of the page's JS heap (after GC) from turn 5 to turn 30: the conversation itself is a few KB.
HEAP_BOUND = 8 * 2**20


def _heap(rel) -> int:
    cdp = rel.page.context.new_cdp_session(rel.page)
    try:
        cdp.send("HeapProfiler.collectGarbage")
        return int(cdp.send("Runtime.getHeapUsage")["usedSize"])
    finally:
        cdp.detach()


def test_thirty_turns_and_a_long_answer_keep_the_page_heap_bounded(rel, tiny_folder):
    chat = rel.chat(tiny_folder, temperature=0, max_tokens=4, context_overflow="drop-oldest")

    async def turns(a: int, b: int):
        for i in range(a, b):
            await chat.ask(f"turn {i}")

    rel.run(turns(0, 5), timeout=300)
    heap5 = _heap(rel)
    rel.run(turns(5, 30), timeout=600)
    heap30 = _heap(rel)
    assert len(chat.messages) == 60 and chat.status == "ready"
    assert heap30 - heap5 < HEAP_BOUND, (heap5, heap30)

    async def long_answer():
        chat.reset()
        return await chat.ask("write a long story", max_tokens=150)
    text = rel.run(long_answer(), timeout=600)
    assert chat.stats["completion_tokens"] >= 1 and chat.messages[-1]["content"] == text
    heap_long = _heap(rel)
    assert heap_long - heap5 < HEAP_BOUND, (heap5, heap_long)


def test_after_a_page_reload_the_chat_shows_its_conversation_and_answers_again(rel, tiny_folder):
    # the suite's page still shows the Chats of earlier tests: closed, so the reload re-shows (and loads) only
    # this one instead of every Chat the package made
    rel.close_widgets()
    chat = rel.chat(tiny_folder, temperature=0, max_tokens=4)
    first = rel.run(chat.ask("before the reload"))
    rel.host.open_page()  # the browser tab reloads: nothing in page memory, Cache Storage kept
    rel.host.reopen_widgets()

    async def after():
        for _ in range(1200):
            if chat._ch.ready_count >= 2:
                break
            await asyncio.sleep(0.1)
        await chat.ready(timeout=300)
        return await chat.ask("after the reload")
    second = rel.run(after(), timeout=400)
    shown = rel.page.evaluate(
        f"() => [...document.querySelectorAll('#widget-{chat.comm.comm_id} .wlw-msg')].map(e => e.textContent)")
    assert shown == ["before the reload", first, "after the reload", second] or \
        [s.strip() for s in shown] == [s.strip() for s in ["before the reload", first, "after the reload", second]]
    assert [m["content"] for m in chat.messages] == ["before the reload", first, "after the reload", second]
