"""The chat view in real headless Chromium: hostile markdown renders inert, ordinary markdown renders.

The page imports the real built ``chat_widget.js`` (the Chat widget's anywidget module) and gives it a
minimal anywidget host (get/set/on/send), the contract JupyterLab's anywidget implements; no model is
needed because rendering the conversation is what is checked.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from webllm_widget.browser import PageServer, launch_webgpu
from webllm_widget._aio import run as run_async  # asyncio.run fails under Playwright's sync API

STATIC = Path(__file__).resolve().parents[2] / "src" / "webllm_widget" / "static"

HOSTILE = (
    "<script>window.__pwned = 'script'</script>\n\n"
    "<img src=x onerror=\"window.__pwned='img'\">\n\n"
    "![x](javascript:window.__pwned='md-img')\n\n"
    "[click me](javascript:window.__pwned='link') and [data](data:text/html,<script>alert(1)</script>)\n\n"
    "<a href=\"javascript:window.__pwned='a'\">raw anchor</a> <svg onload=\"window.__pwned='svg'\"></svg>\n"
    "<iframe src=\"javascript:window.__pwned='iframe'\"></iframe>"
)
BENIGN = "# Title\n\nSome **bold**, *italic* and `code`.\n\n```python\nprint('<b>hi</b>')\n```\n\n- one\n- two\n\n[site](https://example.org/a?b=1)"

HOST_PAGE = """<!doctype html><meta charset=utf-8><body><div id=out></div><script type=module>
class Model {
  constructor(state) { this.state = state; this.cbs = {}; this.sent = []; }
  get(k) { return this.state[k]; }
  set(k, v) { this.state[k] = v; (this.cbs['change:' + k] || []).forEach(f => f()); }
  on(e, f) { (this.cbs[e] = this.cbs[e] || []).push(f); }
  off(e, f) { this.cbs[e] = (this.cbs[e] || []).filter(g => g !== f); }
  send(m) { this.sent.push(m); }
  save_changes() {}
}
const mod = (await import('/chat_widget.js')).default;
window.render = async (state) => {
  const model = new Model(state);
  await mod.initialize({ model });
  const el = document.getElementById('out');
  el.replaceChildren();
  mod.render({ model, el });
  await new Promise(r => setTimeout(r, 300));  // give any injected handler a chance to run
  return model.sent;
};
window.hostReady = true;
</script>"""


def _route(path: str):
    if path == "/":
        return HOST_PAGE.encode(), "text/html"
    if path == "/chat_widget.js":
        return STATIC / "chat_widget.js", "text/javascript"
    return None


async def _render(messages: list[dict], then: str | None = None) -> tuple[dict, list]:
    """Render ``messages`` in the real view; ``then`` (a JS function body run after rendering) may click things,
    its result is returned as ``dom["then"]``."""
    with PageServer(_route) as srv:
        async with launch_webgpu(srv) as b:
            page = b.context.pages[0]
            await b.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=srv.origin)
            await page.goto(srv.origin + "/")
            await page.wait_for_function("window.hostReady === true")
            state = {"messages": messages, "models": [], "model": "default", "stats": {}, "gpu": "",
                     "system_prompt": "", "stop": []}
            sent = await page.evaluate("(s) => window.render(s)", state)
            dom = await page.evaluate("""() => {
              const root = document.querySelector('#out .wlw-messages');
              const all = [...root.querySelectorAll('*')];
              return {
                pwned: window.__pwned ?? null,
                tags: [...new Set(all.map(e => e.tagName.toLowerCase()))],
                on_attrs: all.flatMap(e => [...e.attributes].map(a => a.name)).filter(n => n.startsWith('on')),
                hrefs: [...root.querySelectorAll('a')].map(a => a.getAttribute('href')),
                srcs: all.filter(e => e.hasAttribute('src')).map(e => e.getAttribute('src')),
                text: root.textContent,
                html: root.innerHTML,
                code: [...root.querySelectorAll('pre code')].map(c => c.textContent),
              };
            }""")
            if then:
                dom["then"] = await page.evaluate(f"async () => {{ {then} }}")
            return dom, sent


@pytest.mark.browser
@pytest.mark.parametrize("role", ["user", "assistant"])
def test_hostile_markdown_renders_as_inert_text(role):
    dom, _ = run_async(_render([{"role": role, "content": HOSTILE}]))
    assert dom["pwned"] is None
    for tag in ("script", "img", "iframe", "svg", "object", "embed"):
        assert tag not in dom["tags"], (tag, dom["html"])
    assert dom["on_attrs"] == []
    assert dom["srcs"] == []
    assert all(h and h.startswith(("http://", "https://")) for h in dom["hrefs"]), dom["hrefs"]
    # the markup is still there for the reader, as text
    assert "<script>window.__pwned = 'script'</script>" in dom["text"]
    assert "onerror" in dom["text"] and "javascript:window.__pwned='link'" in dom["text"]


@pytest.mark.browser
def test_markdown_renders_code_lists_and_web_links():
    dom, sent = run_async(_render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": BENIGN}]))
    for tag in ("h3", "strong", "em", "code", "pre", "ul", "li", "a"):
        assert tag in dom["tags"], (tag, dom["html"])
    assert dom["code"] == ["print('<b>hi</b>')"]
    assert dom["hrefs"] == ["https://example.org/a?b=1"]
    # the page announced itself to the kernel (protocol handshake)
    assert any(m.get("kind") == "ready" for m in sent), json.dumps(sent)


TABLE_AND_CODE = (
    "| name | n |\n|:-----|--:|\n| a <b>x</b> | 1 |\n| b | 22 |\n\n"
    "1. first\n2. second\n   - nested\n\n"
    "```python\ndef f(x):\n    return x + 1  # <i>not markup</i>\n```\n\n"
    "```\nplain block\n```"
)


@pytest.mark.browser
def test_tables_nested_lists_and_highlighted_code_with_a_copy_button():
    then = """
      const root = document.querySelector('#out .wlw-messages');
      const btns = [...root.querySelectorAll('pre > button.wlw-copy-code')];
      btns[0].click();
      for (let i = 0; i < 50 && !btns[0].dataset.copied; i++) await new Promise(r => setTimeout(r, 20));
      return {
        buttons: btns.map(b => b.getAttribute('aria-label')),
        copied: btns[0].dataset.copied ?? null,
        clipboard: await navigator.clipboard.readText(),
        cells: [...root.querySelectorAll('table tr')].map(tr => [...tr.children].map(c => [c.tagName, c.textContent, c.className])),
        nested: root.querySelectorAll('ol > li ul > li').length,
        keywords: [...root.querySelectorAll('pre code .hljs-keyword')].map(e => e.textContent),
        langs: [...root.querySelectorAll('pre')].map(p => p.dataset.lang ?? null),
      };"""
    dom, _ = run_async(_render([{"role": "assistant", "content": TABLE_AND_CODE}], then))
    t = dom["then"]
    assert t["cells"] == [
        [["TH", "name", "wlw-align-left"], ["TH", "n", "wlw-align-right"]],
        [["TD", "a <b>x</b>", "wlw-align-left"], ["TD", "1", "wlw-align-right"]],
        [["TD", "b", "wlw-align-left"], ["TD", "22", "wlw-align-right"]],
    ]
    assert t["nested"] == 1
    assert "def" in t["keywords"] and "return" in t["keywords"]  # highlighted as Python
    assert t["langs"] == ["python", None]
    assert dom["code"] == ["def f(x):\n    return x + 1  # <i>not markup</i>", "plain block"]
    assert "i" not in dom["tags"] and "b" not in dom["tags"]
    assert t["buttons"] == ["Copy code", "Copy code"]
    assert t["copied"] == "yes" and t["clipboard"] == dom["code"][0]
