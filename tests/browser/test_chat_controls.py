"""The chat view's controls, clicked in real headless Chromium on WebGPU with the tiny compiled Llama.

Settings typed in the page reach Python and Python's reach the page, and both change the next answer;
regenerate and edit-and-resend give exactly what a fresh run of the resulting conversation gives (same
settings, temperature 0 or a fixed seed); copy puts a message on the clipboard; export downloads what
``chat.messages`` holds. The tiny model's words are noise, so answers are compared only with fresh runs.
"""
from __future__ import annotations

import asyncio
import json

import pytest

from webllm_widget import Chat

pytestmark = pytest.mark.browser


def _wait(host, cond, what: str, timeout: float = 120):
    async def go():
        for _ in range(int(timeout * 20)):
            if cond():
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(what)
    host.run(go(), timeout=timeout + 10)


def _idle(host, chat, n_messages: int):
    """Wait until the conversation holds ``n_messages`` and the page shows no turn in flight."""
    _wait(host, lambda: len(chat.messages) == n_messages and chat.status == "ready", f"{n_messages} messages")
    host.page.wait_for_function(
        f"() => document.querySelectorAll('.wlw-chat .wlw-msg').length === {n_messages}"
        " && document.querySelector('.wlw-chat .wlw-status').textContent === 'ready'", timeout=60_000)


def _fresh(host, chat, messages, **settings) -> dict:
    """What a fresh run of ``messages`` gives (the widget's conversation is left alone)."""
    async def go():
        return await chat.complete(messages=messages, **settings)
    r = host.run(go())
    return {"text": r["choices"][0]["message"]["content"], "usage": r["usage"]}


def _shown(page, chat, **values: str) -> None:
    """Wait until ``chat``'s settings form shows ``values`` (opening it if closed): the page sends the settings it
    holds, and a setting made in Python reaches it asynchronously, as it reaches what the user sees."""
    root = f"#widget-{chat.comm.comm_id} .wlw-chat"
    if not page.locator(f"{root} .wlw-settings").evaluate("d => d.open"):
        page.click(f"{root} .wlw-settings summary")
    checks = " && ".join(f"document.querySelector('{root} .wlw-set-{k}')?.value === {json.dumps(v)}"
                         for k, v in values.items())
    page.wait_for_function(f"() => {checks}")


def test_settings_typed_in_the_page_reach_python_and_back_and_change_the_next_answer(widget_host, tiny_folder):
    page = widget_host.page

    async def load():
        chat = Chat(model=str(tiny_folder), max_tokens=3)
        await chat.ready(timeout=300)
        return chat
    chat = widget_host.run(load())
    assert page.locator(".wlw-chat .wlw-settings").evaluate("d => d.open") is False  # collapsed by default
    page.click(".wlw-chat .wlw-settings summary")
    page.fill(".wlw-chat .wlw-set-system_prompt", "Answer as a pirate.")
    page.fill(".wlw-chat .wlw-set-temperature", "0")
    page.fill(".wlw-chat .wlw-set-top_p", "0.9")
    page.fill(".wlw-chat .wlw-set-max_tokens", "5")
    page.fill(".wlw-chat .wlw-set-seed", "11")
    page.focus(".wlw-chat .wlw-input")  # leaving the last field commits it
    _wait(widget_host, lambda: chat.seed == 11, "the seed typed in the page")
    assert (chat.system_prompt, chat.temperature, chat.top_p, chat.max_tokens, chat.seed) == (
        "Answer as a pirate.", 0.0, 0.9, 5, 11)

    # the next answer typed in the page uses them: same text and token counts as a fresh run with them
    page.fill(".wlw-chat .wlw-input", "hello")
    page.press(".wlw-chat .wlw-input", "Enter")
    _idle(widget_host, chat, 2)
    answer, stats = chat.messages[1]["content"], dict(chat.stats)
    fresh = _fresh(widget_host, chat, [{"role": "system", "content": "Answer as a pirate."},
                                       {"role": "user", "content": "hello"}], temperature=0, top_p=0.9, max_tokens=5)
    assert answer == fresh["text"] and stats["completion_tokens"] == fresh["usage"]["completion_tokens"]
    assert stats["finish_reason"] == "length"  # ended by max_tokens
    without_system = _fresh(widget_host, chat, [{"role": "user", "content": "hello"}], temperature=0, max_tokens=5)
    assert stats["prompt_tokens"] > without_system["usage"]["prompt_tokens"]  # the system prompt was sent

    # Python -> page: the form shows what Python set, and the next page turn uses it
    async def set_from_python():
        chat.max_tokens = 2
        chat.system_prompt = ""
    widget_host.run(set_from_python())
    page.wait_for_function("() => document.querySelector('.wlw-chat .wlw-set-max_tokens').value === '2'"
                           " && document.querySelector('.wlw-chat .wlw-set-system_prompt').value === ''")
    assert page.input_value(".wlw-chat .wlw-set-seed") == "11"
    page.fill(".wlw-chat .wlw-input", "again")
    page.press(".wlw-chat .wlw-input", "Enter")
    _idle(widget_host, chat, 4)
    assert chat.stats["finish_reason"] == "length" and chat.stats["completion_tokens"] < stats["completion_tokens"]
    # clearing a field in the page gives the model's default back (None in Python)
    page.fill(".wlw-chat .wlw-set-seed", "")
    page.focus(".wlw-chat .wlw-input")
    _wait(widget_host, lambda: chat.seed is None, "the cleared seed")


def test_regenerate_edit_copy_and_export(widget_host, tiny_folder, tmp_path):
    page = widget_host.page
    widget_host.browser.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                                  origin=widget_host.server.origin)

    async def start():
        chat = Chat(model=str(tiny_folder), temperature=0, max_tokens=4)
        await chat.ready(timeout=300)
        await chat.ask("first question")
        await chat.ask("second question")
        return chat
    chat = widget_host.run(start())
    _idle(widget_host, chat, 4)
    first = [dict(m) for m in chat.messages]

    # regenerate, with other settings than the answer had: the last answer is replaced by a fresh run's
    async def change():
        chat.temperature, chat.seed, chat.max_tokens = 1.0, 5, 6
    widget_host.run(change())
    _shown(page, chat, max_tokens="6", temperature="1", seed="5")
    page.wait_for_function("() => document.querySelector('.wlw-chat .wlw-regenerate:not([hidden])') !== null")
    assert page.locator(".wlw-chat .wlw-regenerate:not([hidden])").count() == 1  # only on the last answer
    before = dict(chat.stats)
    page.click(".wlw-chat .wlw-regenerate:not([hidden])")
    _wait(widget_host, lambda: chat.stats != before, "the regenerated answer")
    _idle(widget_host, chat, 4)
    assert chat.messages[:3] == first[:3]
    fresh = _fresh(widget_host, chat, first[:3], temperature=1.0, seed=5, max_tokens=6)
    assert chat.messages[3]["content"] == fresh["text"] != first[3]["content"]

    # edit the first question and resend: the conversation after it is dropped
    async def greedy():
        chat.temperature, chat.seed, chat.max_tokens = 0.0, None, 4
    widget_host.run(greedy())
    _shown(page, chat, max_tokens="4", temperature="0", seed="")
    page.locator(".wlw-chat .wlw-turn-user .wlw-edit-btn").first.click()
    box = page.locator(".wlw-chat .wlw-edit-input")
    assert box.input_value() == "first question"
    box.fill("an edited question")
    box.press("Enter")
    _wait(widget_host, lambda: len(chat.messages) == 2 and chat.messages[0]["content"] == "an edited question",
          "the edited turn")
    _idle(widget_host, chat, 2)
    fresh = _fresh(widget_host, chat, [{"role": "user", "content": "an edited question"}], temperature=0, max_tokens=4)
    assert chat.messages[1]["content"] == fresh["text"]
    shown = page.evaluate("() => [...document.querySelectorAll('.wlw-chat .wlw-msg')].map(e => e.textContent)")
    assert shown[0] == "an edited question" and len(shown) == 2

    # copy a message: its text reaches the clipboard
    page.locator(".wlw-chat .wlw-turn-assistant .wlw-copy").first.click()
    page.wait_for_function("() => document.querySelector('.wlw-chat .wlw-turn-assistant .wlw-copy').dataset.copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == chat.messages[1]["content"]

    # export: the JSON download holds chat.messages; the Markdown one every message
    with page.expect_download() as dl:
        page.click(".wlw-chat .wlw-export-json")
    exported = json.loads(open(dl.value.path(), encoding="utf-8").read())
    assert exported["messages"] == chat.messages and exported["settings"]["max_tokens"] == 4
    assert dl.value.suggested_filename == "conversation.json"
    with page.expect_download() as dl:
        page.click(".wlw-chat .wlw-export-md")
    md = open(dl.value.path(), encoding="utf-8").read()
    assert md == chat.to_markdown() == f"## User\n\nan edited question\n\n## Assistant\n\n{chat.messages[1]['content']}\n"

    # the same from Python: regenerate replaces the last answer with a fresh run's
    async def regenerate():
        return await chat.regenerate(max_tokens=2)
    text = widget_host.run(regenerate())
    fresh = _fresh(widget_host, chat, [{"role": "user", "content": "an edited question"}], temperature=0, max_tokens=2)
    assert text == fresh["text"] and chat.messages == [{"role": "user", "content": "an edited question"},
                                                       {"role": "assistant", "content": text}]
