"""Kernel restart in real JupyterLab: what a displayed Chat keeps, and that the chat answers again.

After a kernel restart the Python objects are gone (the old ``Chat`` with them); the page is not. So:
- the old output keeps showing the conversation it had (the widget model's state lives in the page), marks itself
  disconnected and refuses input, saying to run the cell again;
- the page's engine keeps the model loaded: running the cells again makes a new ``Chat`` that reuses it (no engine
  or model bytes sent, ``bytes_installed == 0``) and answers.

Real JupyterLab, real kernel restart (``kernel.restart()``, what the Kernel menu does), the tiny random-weight model
on SwiftShader WebGPU (answers are noise: the test checks what is kept and that answers come, not their content).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from jupyter import JupyterLab  # noqa: E402
from test_chat_jupyter import kernel, text_of, wait_notebook  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.jupyter]

CELLS = [
    "from webllm_widget import Chat\nchat = Chat(temperature=0, max_tokens=6)\nchat",
    "import json\nreport = await chat.ready()\nfirst = await chat.ask('Hello there')\nsecond = await chat.ask('And again')\n"
    "print(json.dumps({'report': report, 'sent': chat.bytes_sent, 'messages': chat.messages}))",
]

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


def test_after_a_kernel_restart_the_old_chat_keeps_its_conversation_and_a_new_one_answers_without_bytes(
        chromium, tmp_path, tiny_folder):
    (tmp_path / "restart.ipynb").write_text(json.dumps(notebook(CELLS)))
    with JupyterLab(tmp_path, env={"WEBLLM_WIDGET_MODEL": str(tiny_folder)}) as lab:
        page = lab.open_notebook(chromium, "restart.ipynb")
        try:
            lab.record_comm(page)
            lab.run_all(page)
            before = last_json(wait_notebook(lab, page, len(CELLS), timeout=600)[1])
            assert before["report"]["bytes_installed"] > 0 and before["sent"] > 0, before  # the first load copied
            convo = before["messages"]
            assert [m["role"] for m in convo] == ["user", "assistant"] * 2, convo
            shown = page.wait_for_function(  # the widget has drawn the whole conversation
                f"() => {{ const w = ({WIDGET_DOM})(); return w.length === 1 && w[0].messages.length === 4 && w; }}",
                timeout=30000).json_value()[0]
            assert [t for _, t in shown["messages"]] == [m["content"] for m in convo] or \
                [" ".join(t.split()) for _, t in shown["messages"]] == [" ".join(m["content"].split()) for m in convo]

            # restart the kernel, as the Kernel menu does
            page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()")
            lab.wait_kernel_idle(page, 120)
            gone = kernel(page, "import json; print(json.dumps('chat' in globals()))")
            assert gone is False  # the Python objects went with the old kernel

            # the old output still shows its conversation, says it is disconnected and takes no input
            old = page.wait_for_function(
                f"() => {{ const w = ({WIDGET_DOM})(); return w.length === 1 && w[0].status === 'disconnected' && w; }}",
                timeout=30000).json_value()[0]
            assert old["messages"] == shown["messages"], (old, shown)
            assert old["send_disabled"] is True
            assert "kernel-disconnected" in old["error"] and "Run its cell again" in old["error"], old["error"]
            page.fill(".wlw-chat textarea", "typed into the disconnected chat")
            page.press(".wlw-chat textarea", "Enter")
            page.wait_for_timeout(1000)
            typed = page.evaluate(WIDGET_DOM)[0]
            assert typed["messages"] == shown["messages"], typed  # nothing was asked of the page's engine

            # running the cells again: a new Chat reuses the model the page still holds, and answers
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
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
            assert not [m for m in lab.console_errors() if "Uncaught" in m or m.startswith("pageerror")], \
                lab.console_errors()
        except BaseException:
            print("console:", *lab.console[-40:], sep="\n")
            print("comm:", *lab.comm_log(page)[-60:], sep="\n")
            print("outputs:", lab.outputs_text(page)[-3000:])
            raise
