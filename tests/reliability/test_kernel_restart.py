"""Kernel restart in real JupyterLab: what a displayed Chat keeps, and that the chat answers again.

After a kernel restart the Python objects are gone (the old ``Chat`` with them); the page is not. So:
- the old output keeps showing the conversation it had (the widget model's state lives in the page), marks itself
  disconnected and refuses input, saying to run the cell again;
- the page's engine keeps the model loaded: running the cells again makes a new ``Chat`` that reuses it (no engine
  or model bytes sent, ``bytes_installed == 0``) and answers;
- the restart comes while the page is generating a long answer: that answer stops (the engine reports it aborted,
  the old output keeps the partial text and nothing more arrives), the engine is free again, nothing hangs.

Real JupyterLab, real kernel restart (``kernel.restart()``, what the Kernel menu does), the tiny random-weight model
on SwiftShader WebGPU (answers are noise: the test checks what is kept and that answers come, not their content).
"""
from __future__ import annotations

import json
import time

import pytest

from jupyter import JupyterLab, kernel, text_of, wait_notebook

pytestmark = [pytest.mark.browser, pytest.mark.jupyter]

CELLS = [
    "from webllm_widget import Chat\nchat = Chat(temperature=0, max_tokens=6)\nchat",
    "import json, os\nreport = await chat.ready()\nfirst = await chat.ask('Hello there')\nsecond = await chat.ask('And again')\n"
    "print(json.dumps({'report': report, 'sent': chat.bytes_sent, 'messages': chat.messages}))\n"
    # the first run leaves a long answer generating in the page when the cell ends: the restart comes in the middle
    "if not os.path.exists('restarted'):\n    long_answer = chat.send('Tell me a long story', max_tokens=180)",
]

# Records how each generation of the page's engine ends (the engine is made by the first Chat; wrapped once it is).
RECORD_ENDS = """() => { globalThis.__ends = []; const t = setInterval(async () => {
  const p = globalThis.__webllm_widget_engine__; if (!p) return; clearInterval(t);
  const e = await p, real = e.generate.bind(e);
  e.generate = async (...a) => { const r = await real(...a); globalThis.__ends.push(r.finish_reason); return r; };
}, 10); }"""
ENGINE_IDLE = "async () => (await globalThis.__webllm_widget_engine__).running === null"

WIDGET_DOM = """() => [...document.querySelectorAll('.wlw-chat')].map(root => ({
    messages: [...root.querySelectorAll('.wlw-msg')].map(e => [e.dataset.role, e.textContent]),
    status: root.querySelector('.wlw-status').textContent,
    error: root.querySelector('.wlw-error').textContent,
    send_disabled: root.querySelector('.wlw-send').disabled,
}))"""


def notebook(cells: list[str]) -> dict:
    return {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": c}
                      for c in cells],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def last_json(outputs: list[dict]) -> dict:
    return json.loads(text_of(outputs).strip().splitlines()[-1])


def test_a_kernel_restart_mid_answer_stops_it_keeps_the_conversation_and_a_new_chat_answers_without_bytes(
        chromium, tmp_path, tiny_folder):
    (tmp_path / "restart.ipynb").write_text(json.dumps(notebook(CELLS)))
    with JupyterLab(tmp_path, env={"WEBLLM_WIDGET_MODEL": str(tiny_folder)}) as lab:
        page = lab.open_notebook(chromium, "restart.ipynb")
        try:
            lab.record_comm(page)
            page.evaluate(RECORD_ENDS)
            lab.run_all(page)
            before = last_json(wait_notebook(lab, page, len(CELLS), timeout=600)[1])
            assert before["report"]["bytes_installed"] > 0 and before["sent"] > 0, before  # the first load copied
            convo = before["messages"]
            assert [m["role"] for m in convo] == ["user", "assistant"] * 2, convo
            shown = page.wait_for_function(  # the widget has drawn the whole conversation (then the long answer)
                f"() => {{ const w = ({WIDGET_DOM})(); return w.length === 1 && w[0].messages.length >= 4 && w; }}",
                timeout=30000).json_value()[0]
            shown["messages"] = shown["messages"][:4]
            assert [t for _, t in shown["messages"]] == [m["content"] for m in convo] or \
                [" ".join(t.split()) for _, t in shown["messages"]] == [" ".join(m["content"].split()) for m in convo]

            # the long answer is being generated in the page: tokens are on screen
            page.wait_for_function(f"() => {{ const w = ({WIDGET_DOM})(); return w.length === 1 && "
                                   "w[0].status === 'generating' && w[0].messages.length === 6 && "
                                   "w[0].messages[5][1].trim().length > 0; }", timeout=60000)
            ends = page.evaluate("globalThis.__ends")
            assert len(ends) == 2 and "abort" not in ends, ends  # the two asks ended; the long one has not

            # restart the kernel, as the Kernel menu does
            page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()")
            lab.wait_kernel_idle(page, 120)
            gone = kernel(page, "import json; print(json.dumps('chat' in globals()))")
            assert gone is False  # the Python objects went with the old kernel

            # the old output still shows its conversation, says it is disconnected and takes no input
            old = page.wait_for_function(
                f"() => {{ const w = ({WIDGET_DOM})(); return w.length === 1 && w[0].status === 'disconnected' && w; }}",
                timeout=30000).json_value()[0]
            # the long answer stopped: the engine says it was aborted and is free; its partial text stays, no more comes
            page.wait_for_function("() => globalThis.__ends.length === 3", timeout=30000)
            assert page.evaluate("globalThis.__ends")[2] == "abort", page.evaluate("globalThis.__ends")
            assert page.evaluate(ENGINE_IDLE) is True
            assert old["messages"][:4] == shown["messages"], (old, shown)
            assert old["messages"][4:] and old["messages"][4][0] == "user" and "long story" in old["messages"][4][1]
            partial = old["messages"][5][1] if len(old["messages"]) > 5 else ""
            page.wait_for_timeout(1500)
            old = page.evaluate(WIDGET_DOM)[0]
            assert (old["messages"][5][1] if len(old["messages"]) > 5 else "") == partial, old["messages"]
            assert old["send_disabled"] is True
            assert "kernel-disconnected" in old["error"] and "Run its cell again" in old["error"], old["error"]
            page.fill(".wlw-chat textarea", "typed into the disconnected chat")
            page.press(".wlw-chat textarea", "Enter")
            page.wait_for_timeout(1000)
            typed = page.evaluate(WIDGET_DOM)[0]
            assert typed["messages"] == old["messages"], typed  # nothing was asked of the page's engine
            assert len(page.evaluate("globalThis.__ends")) == 3

            # running the cells again: a new Chat reuses the model the page still holds, and answers
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
            (tmp_path / "restarted").write_text("")  # this time the cell ends without a long answer
            lab.run_all(page)
            after = last_json(wait_notebook(lab, page, len(CELLS), timeout=600)[1])
            assert after["report"]["bytes_installed"] == 0, after["report"]  # nothing installed: already loaded
            assert after["sent"] == 0, after["sent"]  # no engine or model byte went to the page
            assert [m["role"] for m in after["messages"]] == ["user", "assistant"] * 2, after["messages"]
            assert all(m["content"].strip() for m in after["messages"]), after["messages"]
            new = page.wait_for_function(
                f"() => {{ const w = ({WIDGET_DOM})(); return w.length === 1 && w[0].messages.length === 4"
                " && w[0].status === 'ready' && w; }", timeout=30000).json_value()[0]
            assert not new["error"], new
            assert page.evaluate("globalThis.__ends")[3:] and "abort" not in page.evaluate("globalThis.__ends")[3:]
            assert not [m for m in lab.console_errors() if "Uncaught" in m or m.startswith("pageerror")], \
                lab.console_errors()
        except BaseException:
            print("console:", *lab.console[-40:], sep="\n")
            print("comm:", *lab.comm_log(page)[-60:], sep="\n")
            print("outputs:", lab.outputs_text(page)[-3000:])
            raise
