"""Untrusted text, typed by the user or returned by the model, renders inert and intact in the DOM and in
``chat.messages``: no element, attribute, URL or script from the text ever becomes live."""
from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.browser

# name -> text. Each carries a marker ("M<name>") so its presence in the DOM can be checked as plain text.
CORPUS = {
    "script": "<script>window.__pwned='script'</script> Mscript",
    "handlers": "<img src=x onerror=\"window.__pwned='img'\"><svg onload=\"window.__pwned='svg'\"></svg>"
                "<body onload=\"window.__pwned='body'\"> Mhandlers",
    "js-url": "[click](javascript:window.__pwned='link') <a href=\"javascript:window.__pwned='a'\">x</a> Mjs-url",
    "data-url": "[data](data:text/html,<script>window.__pwned='data'</script>) "
                "![img](data:image/svg+xml,<svg onload=alert(1)>) Mdata-url",
    "iframe": "<iframe src=\"javascript:window.__pwned='iframe'\"></iframe><object data=x></object> Miframe",
    "huge-line": "Mhuge-line " + "**x** `y` [z](http://127.0.0.1/) " * 6000,   # ~200 KB, one line, many spans
    "one-megabyte": "Mone-megabyte\n" + ("lorem *ipsum* dolor <b>sit</b> amet\n" * 29000),
    "surrogates": "Msurrogates lone high \ud800 and low \udfff halves",
    "rtl-override": "Mrtl-override \u202eevil.exe\u202c \u2067isolate\u2069",
    "zero-width": "Mzero-width a\u200bb\u200cc\u200dd\ufeffe\u2060f",
    "ansi": "Mansi \x1b[31mred\x1b[0m \x1b]8;;http://x\x07link\x1b]8;;\x07 \x1b[2J",
}


def _expected(text: str) -> str:
    """What survives the trip: lone surrogates cannot be encoded (JSON/UTF-8), so they become U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


INSPECT = """(root) => {
  const box = root.querySelector('.wlw-messages');
  const all = [...box.querySelectorAll('*')];
  return {
    pwned: window.__pwned ?? null,
    tags: [...new Set(all.map(e => e.tagName.toLowerCase()))],
    on_attrs: all.flatMap(e => [...e.attributes].map(a => a.name)).filter(n => n.startsWith('on')),
    hrefs: [...box.querySelectorAll('[href]')].map(a => a.getAttribute('href')),
    srcs: all.filter(e => e.hasAttribute('src') || e.hasAttribute('data')).length,
    texts: [...box.querySelectorAll('.wlw-msg')].map(e => e.textContent),
  };
}"""


def _inspect(rel, chat):
    cid = chat.comm.comm_id
    return rel.page.evaluate(f"() => ({INSPECT})(document.querySelector('#widget-{cid} .wlw-chat'))")


def _check_inert(dom) -> None:
    assert dom["pwned"] is None
    for tag in ("script", "img", "iframe", "svg", "object", "embed", "body", "style", "link", "meta"):
        assert tag not in dom["tags"], tag
    assert dom["on_attrs"] == [] and dom["srcs"] == 0
    assert all(h.startswith(("http://", "https://")) for h in dom["hrefs"]), dom["hrefs"]


def test_hostile_text_from_the_model_and_the_user_renders_inert_and_intact(rel, tiny_folder):
    chat = rel.chat(tiny_folder, temperature=0, max_tokens=3)
    convo = []
    for name, text in CORPUS.items():
        convo += [{"role": "user", "content": text}, {"role": "assistant", "content": text}]

    async def show():
        chat.messages = convo  # how finished turns (typed text and the model's answers) reach the view
        await asyncio.sleep(0.5)
    rel.run(show())
    rel.page.wait_for_function(
        f"() => document.querySelectorAll('#widget-{chat.comm.comm_id} .wlw-msg').length === {len(convo)}",
        timeout=120_000)
    dom = _inspect(rel, chat)
    _check_inert(dom)
    for (name, text), i in zip(CORPUS.items(), range(0, len(convo), 2)):
        for shown in dom["texts"][i:i + 2]:
            assert f"M{name}" in shown, name
            if name in ("surrogates", "rtl-override", "zero-width", "ansi", "script"):
                assert _expected(text) in shown, name
    # 1 MB renders whole: only the markdown emphasis marks and line breaks are not text
    big = CORPUS["one-megabyte"]
    assert len(big) > 1_000_000
    assert dom["texts"][2 * list(CORPUS).index("one-megabyte")] == big.replace("*", "").replace("\n", "")
    # the conversation is kept in Python exactly (lone surrogates, which no UTF-8 message can carry, as U+FFFD)
    assert chat.messages == [dict(m, content=_expected(m["content"])) for m in convo]
    assert "\ufffd" in chat.messages[2 * list(CORPUS).index("surrogates")]["content"]

    # the real path: hostile prompts asked from Python, answered by the model, recorded and displayed
    async def ask_all():
        chat.messages = []
        chat.reset()
        out = []
        for name in ("script", "handlers", "surrogates", "rtl-override", "zero-width", "ansi", "js-url"):
            out.append(await chat.ask(CORPUS[name]))
            chat.reset()  # keep each inside the tiny model's window
            chat.messages = []
        return out
    answers = rel.run(ask_all(), timeout=300)
    assert len(answers) == 7 and chat.status == "ready"
    _check_inert(_inspect(rel, chat))


def test_hostile_text_typed_in_the_page_reaches_python_intact(rel, tiny_folder):
    chat = rel.chat(tiny_folder, temperature=0, max_tokens=2)
    cid = chat.comm.comm_id
    text = CORPUS["script"] + " " + CORPUS["zero-width"] + " " + CORPUS["rtl-override"] + " " + CORPUS["ansi"]
    box = rel.page.locator(f"#widget-{cid} textarea")
    box.fill(text)
    box.press("Enter")

    async def wait():
        for _ in range(1200):
            if len(chat.messages) >= 2:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(chat.messages)
    rel.run(wait())
    assert chat.messages[0] == {"role": "user", "content": text}
    _check_inert(_inspect(rel, chat))
    assert text in _inspect(rel, chat)["texts"][0]
