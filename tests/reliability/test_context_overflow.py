"""Context overflow: a prompt longer than the window, and a conversation that grows past it.

The tiny model's window is 256 tokens. After each overflow the next answer must equal a fresh greedy run
of the same messages (a KV cache left half-filled by the failed request would change it).
"""
from __future__ import annotations

import pytest

from rel_host import fresh
from webllm_widget.errors import ContextWindowExceeded

pytestmark = pytest.mark.browser

LONG = " ".join(["hello"] * 90)  # ~90 tokens: three turns of it outgrow 256


def test_a_prompt_longer_than_the_window_raises_context_overflow_with_token_counts(rel, tiny_folder):
    chat = rel.chat(tiny_folder, temperature=0, max_tokens=6)

    async def go():
        with pytest.raises(ContextWindowExceeded) as e:
            await chat.ask(" ".join(["hello"] * 400))
        status = chat.status
        text = await chat.ask("hello")
        ref = await fresh(chat, [{"role": "user", "content": "hello"}], max_tokens=6)
        return e.value, status, text, ref

    err, status, text, ref = rel.run(go())
    assert err.code == "context-overflow"
    assert err.detail["context_window_size"] == 256
    assert err.detail["prompt_tokens"] > 256
    assert "256" in str(err) and str(err.detail["prompt_tokens"]) in str(err)
    assert status == "ready" and chat.error["code"] == "context-overflow"
    # the failed turn is not in the conversation; the next answer is the fresh greedy one
    assert chat.messages[0] == {"role": "user", "content": "hello"} and len(chat.messages) == 2
    assert text == ref


def test_a_growing_conversation_raises_by_default_and_keeps_its_turns(rel, tiny_folder):
    chat = rel.chat(tiny_folder, temperature=0, max_tokens=8)

    async def go():
        turns = 0
        with pytest.raises(ContextWindowExceeded) as e:
            for turns in range(1, 8):
                await chat.ask(f"{turns} {LONG}")
        kept = list(chat.messages)
        chat.reset()
        text = await chat.ask("hello")
        ref = await fresh(chat, [{"role": "user", "content": "hello"}], max_tokens=8)
        return e.value, turns, kept, text, ref

    err, turns, kept, text, ref = rel.run(go())
    assert err.code == "context-overflow" and 2 <= turns <= 4
    assert len(kept) == 2 * (turns - 1)  # every answered turn kept, the failed one not added
    assert text == ref


def test_a_growing_conversation_drops_its_oldest_turns_when_configured(rel, tiny_folder):
    chat = rel.chat(tiny_folder, temperature=0, max_tokens=8, context_overflow="drop-oldest",
                    system_prompt="be brief")

    async def go():
        handles = []
        for i in range(5):
            h = chat.send(f"{i} {LONG}")
            await h
            handles.append(h)
        last = handles[-1]
        seen = [{"role": "system", "content": "be brief"}] + list(chat.messages[2 * last.result["dropped_turns"]:-1])
        ref = await fresh(chat, seen, max_tokens=8)
        return handles, ref

    handles, ref = rel.run(go())
    dropped = [h.result.get("dropped_turns", 0) for h in handles]
    assert dropped[0] == 0 and dropped[-1] >= 1, dropped
    assert len(chat.messages) == 10  # the conversation keeps every turn; only the model's view is shorter
    assert [m["content"] for m in chat.messages[1::2]] == [h.text for h in handles]
    assert handles[-1].text == ref  # the last answer equals a fresh run of exactly what the model saw
