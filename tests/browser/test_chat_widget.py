"""The Chat widget end to end in real headless Chromium on WebGPU: Python API <-> page <-> engine.

Runs in B's widget host page (tests/helpers/browser.py: the real widget module, real Channel, real custom
messages with binary buffers) with the tiny compiled Llama; its words are noise, so content is not
checked here (the JupyterLab test with SmolLM2 does that).
"""
from __future__ import annotations

import asyncio

import pytest

from webllm_widget import Chat
from webllm_widget.errors import BadArtifact


pytestmark = pytest.mark.browser


def _dom(host, expr: str):
    return host.page.evaluate(f"() => {{ const root = document.querySelector('.wlw-chat'); return {expr}; }}")


def test_ask_and_stream_reach_python_and_the_widget(widget_host, tiny_folder):
    async def go():
        chat = Chat(model=str(tiny_folder), temperature=0, max_tokens=5)
        report = await chat.ready(timeout=300)
        tokens: list[str] = []
        done: list[str] = []
        text1 = await chat.send("hello", on_token=tokens.append, on_done=done.append)
        streamed = [t async for t in chat.stream("and again")]
        return chat, report, text1, tokens, done, streamed

    chat, report, text1, tokens, done, streamed = widget_host.run(go())
    assert report["gpu"]["architecture"] == "swiftshader" and chat.status == "ready"
    assert tokens and "".join(tokens) == text1 and done == [text1]
    assert streamed and [m["role"] for m in chat.messages] == ["user", "assistant", "user", "assistant"]
    assert chat.messages[1]["content"] == text1 and chat.messages[3]["content"] == "".join(streamed)
    assert chat.stats["completion_tokens"] >= 1 and chat.stats["decode_tokens_per_s"] > 0
    # the second turn reused the KV cache: it prefilled fewer tokens than the whole conversation holds
    assert chat.stats["prompt_tokens"] < 10 + len(text1) + len("hello") + len("and again")
    shown = _dom(widget_host, "[...root.querySelectorAll('.wlw-msg')].map(e => [e.dataset.role, e.textContent])")
    assert [r for r, _ in shown] == ["user", "assistant", "user", "assistant"]
    assert shown[0][1] == "hello" and shown[1][1] == text1.strip() or shown[1][1] == text1
    assert "swiftshader" in _dom(widget_host, "root.querySelector('.wlw-gpu-name').textContent")


def test_stop_ends_a_long_answer_with_a_partial_message(widget_host, tiny_folder):
    async def go():
        chat = Chat(model=str(tiny_folder), temperature=0)
        await chat.ready(timeout=300)
        h = chat.send("go on", max_tokens=300)
        while len(h.tokens) < 3:
            await asyncio.sleep(0.05)
        chat.stop()
        text = await h
        return chat, h, text

    chat, h, text = widget_host.run(go())
    assert h.result["finish_reason"] == "abort"
    assert 3 <= h.result["usage"]["completion_tokens"] < 300
    assert chat.status == "ready"
    assert chat.messages[-1] == {"role": "assistant", "content": text}


def test_text_typed_in_the_widget_appears_in_python_with_its_answer(widget_host, tiny_folder):
    async def load():
        chat = Chat(model=str(tiny_folder), temperature=0, max_tokens=3)
        await chat.ready(timeout=300)
        return chat

    chat = widget_host.run(load())
    widget_host.page.fill(".wlw-chat textarea", "typed in the page")
    widget_host.page.press(".wlw-chat textarea", "Enter")

    async def wait():
        for _ in range(600):
            if len(chat.messages) >= 2:
                return chat.messages
            await asyncio.sleep(0.1)
        raise TimeoutError(f"messages stayed {chat.messages}")

    msgs = widget_host.run(wait())
    assert msgs[0] == {"role": "user", "content": "typed in the page"}
    assert msgs[1]["role"] == "assistant" and msgs[1]["content"]
    assert chat.stats["completion_tokens"] >= 1


def test_complete_returns_an_openai_style_dict_and_leaves_the_conversation(widget_host, tiny_folder):
    async def go():
        chat = Chat(model=str(tiny_folder))
        await chat.ready(timeout=300)
        return chat, await chat.complete(messages=[{"role": "system", "content": "be brief"},
                                                   {"role": "user", "content": "hi"}], max_tokens=2, temperature=0)

    chat, r = widget_host.run(go())
    assert r["object"] == "chat.completion"
    assert r["choices"][0]["message"]["role"] == "assistant" and r["choices"][0]["finish_reason"] == "length"
    assert r["usage"]["completion_tokens"] == 2 - 1 or r["usage"]["completion_tokens"] >= 1
    assert r["usage"]["total_tokens"] == r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"]
    assert r["timings"]["decode_tokens_per_s"] is not None
    assert chat.messages == []


def test_a_reloaded_page_loads_the_model_from_its_cache_with_no_bytes_sent(widget_host, tiny_folder):
    async def first():
        chat = Chat(model=str(tiny_folder), max_tokens=2)
        return chat, await chat.ready(timeout=300)

    chat, _ = widget_host.run(first())
    sent_before = chat.bytes_sent
    widget_host.open_page()          # a new page: nothing in memory, Cache Storage kept
    widget_host.reopen_widgets()

    async def second():
        for _ in range(600):         # the new page says ready; the widget loads again by itself
            if chat._ch.ready_count >= 2:
                break
            await asyncio.sleep(0.1)
        report = await chat.ready(timeout=300)
        text = await chat.ask("hi", temperature=0)
        return report, text

    report, text = widget_host.run(second())
    assert report["bytes_installed"] == 0
    assert chat.bytes_sent == sent_before, "bytes were sent to the reloaded page"
    assert chat.messages[-1]["content"] == text


def test_a_damaged_model_library_raises_bad_artifact_and_shows_in_the_widget(widget_host, tmp_path, tiny_folder):
    bad = tmp_path / "bad-model"
    bad.mkdir()
    for f in tiny_folder.iterdir():
        if f.name != "manifest.json":
            (bad / f.name).write_bytes(f.read_bytes() if f.suffix != ".wasm" else b"not a wasm module")

    async def go():
        chat = Chat(model=str(bad))
        with pytest.raises(BadArtifact) as e:
            await chat.ready(timeout=300)
        return chat, e.value

    chat, err = widget_host.run(go())
    assert err.code == "bad-artifact" and chat.status == "error" and chat.error["code"] == "bad-artifact"
    shown = _dom(widget_host, "root.querySelector('.wlw-error').textContent")
    assert "[bad-artifact]" in shown


def test_two_chats_on_one_page_share_one_engine_and_keep_their_own_conversations(widget_host, tiny_folder):
    async def go():
        a = Chat(model=str(tiny_folder), temperature=0, max_tokens=2)
        b = Chat(model=str(tiny_folder), temperature=0, max_tokens=2)
        ra, rb = await a.ready(timeout=300), await b.ready(timeout=300)
        ta = await a.ask("first chat")
        tb = await b.ask("second chat")
        return a, b, ra, rb, ta, tb

    a, b, ra, rb, ta, tb = widget_host.run(go())
    # the second Chat joined the first one's load of the page's engine (same report, nothing sent by it):
    # the model was loaded once (a second load would report its own duration)
    assert rb == ra
    assert b.bytes_sent == 0
    assert [m["content"] for m in a.messages] == ["first chat", ta]
    assert [m["content"] for m in b.messages] == ["second chat", tb]
    assert widget_host.page.evaluate("() => document.querySelectorAll('.wlw-chat').length") == 2
