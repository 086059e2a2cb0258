"""JupyterLab end to end: notebooks/chat.ipynb with the built-in SmolLM2 model, in the WebGPU Chromium.

Real JupyterLab, real kernel, real widget, real model on SwiftShader WebGPU: slow (minutes).
"""
from __future__ import annotations

import ast
import json
import shutil
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jupyter import JupyterLab  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

pytestmark = [pytest.mark.browser, pytest.mark.jupyter, pytest.mark.slow]

KERNEL_EXEC = """async (code) => {
  const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const fut = k.requestExecute({code, store_history: false});
  let out = "";
  fut.onIOPub = (msg) => {
    const t = msg.header.msg_type, c = msg.content;
    if (t === 'stream') out += c.text;
    else if (t === 'error') out += `ERROR ${c.ename}: ${c.evalue}`;
  };
  await fut.done;
  return out;
}"""


def kernel(page, code: str) -> dict:
    """Run ``code`` in the notebook's kernel (it must print one JSON line) and return the parsed JSON."""
    out = page.evaluate(KERNEL_EXEC, code)
    assert not out.startswith("ERROR"), out
    return json.loads(out.strip().splitlines()[-1])


def wait_notebook(lab, page, n_code_cells: int, timeout: float) -> list[list[dict]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        err = lab.first_error_output(page)
        if err:
            raise AssertionError(f"a notebook cell failed:\n{err}")
        outs = lab.outputs(page)
        code_outs = [o for o in outs if o is not None]
        if len(code_outs) >= n_code_cells and outs[-1]:
            return outs
        time.sleep(1)
    raise TimeoutError(lab.outputs_text(page)[-4000:])


def text_of(cell_outputs: list[dict]) -> str:
    parts = []
    for o in cell_outputs:
        if "text" in o:
            parts.append("".join(o["text"]) if isinstance(o["text"], list) else o["text"])
        elif "data" in o and "text/plain" in o["data"]:
            t = o["data"]["text/plain"]
            parts.append("".join(t) if isinstance(t, list) else t)
    return "".join(parts)


def test_chat_notebook_answers_paris_keeps_the_conversation_and_reloads_from_cache(chromium, tmp_path):
    shutil.copy(NOTEBOOKS / "chat.ipynb", tmp_path / "chat.ipynb")
    nb = json.loads((tmp_path / "chat.ipynb").read_text())
    code_cells = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    with JupyterLab(tmp_path) as lab:
        page = lab.open_notebook(chromium, "chat.ipynb")
        lab.run_all(page)
        outs = wait_notebook(lab, page, len(code_cells), timeout=3000)

        ask_out = text_of(outs[code_cells[2]])
        answer, stats1 = ask_out.split("\n")[0], ast.literal_eval(ask_out.strip().splitlines()[-1])
        assert "Paris" in answer, ask_out
        shown = page.evaluate("() => [...document.querySelectorAll('.wlw-msg.wlw-assistant')].map(e => e.textContent)")
        assert any("Paris" in s for s in shown), shown

        stream_out = text_of(outs[code_cells[3]])
        stats2 = ast.literal_eval(stream_out.strip().splitlines()[-1])
        state = kernel(page, "import json; print(json.dumps({'messages': chat.messages, 'stats': chat.stats}))")
        roles = [m["role"] for m in state["messages"]]
        assert roles[:4] == ["user", "assistant", "user", "assistant"], roles
        assert state["messages"][0]["content"] == "What is the capital of France?"
        assert "Paris" in state["messages"][1]["content"]
        # second question: the KV cache holds the first turn, so only the new tokens are prefilled, fewer than
        # the first prompt (system prompt + question); a cold prefill would cover both turns, more than that
        assert stats2["prompt_tokens"] < stats1["prompt_tokens"], (stats1, stats2)
        assert stats2["completion_tokens"] >= 1

        # a message typed into the widget reaches Python and gets an answer
        n_before = len(state["messages"])
        page.fill(".wlw-chat textarea", "Thank you!")
        page.press(".wlw-chat textarea", "Enter")
        deadline = time.monotonic() + 900
        while True:
            msgs = kernel(page, "import json; print(json.dumps(chat.messages))")
            if len(msgs) >= n_before + 2:
                break
            assert time.monotonic() < deadline, msgs
            time.sleep(2)
        assert msgs[n_before] == {"role": "user", "content": "Thank you!"}
        assert msgs[n_before + 1]["role"] == "assistant" and msgs[n_before + 1]["content"].strip()

        # reload the page: the widget loads the model again from the browser's cache, no bytes sent
        sent = kernel(page, "import json; print(json.dumps(chat.bytes_sent))")
        page.reload()
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                               " && window.jupyterapp.shell.currentWidget.sessionContext", timeout=120000)
        lab.wait_kernel_idle(page, 120)
        deadline = time.monotonic() + 900
        while True:
            st = kernel(page, "import json; print(json.dumps({'ready': chat._ch.ready_count, 'status': chat.status,"
                              " 'sent': chat.bytes_sent, 'load': chat._load_info}))")
            if st["ready"] >= 2 and st["status"] == "ready" and st["load"]:
                break
            assert st["status"] != "error", st
            assert time.monotonic() < deadline, st
            time.sleep(2)
        assert st["sent"] == sent
        assert st["load"]["bytes_installed"] == 0
