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
from test_chat_engine import tiny_model_folder  # noqa: E402,F401  (shared fixture)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

pytestmark = [pytest.mark.browser, pytest.mark.jupyter]

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


def scroll_to_widget(page) -> None:
    """JupyterLab 4 renders only the cells in view: bring the Chat widget's cell (the first code cell) back."""
    page.evaluate("""async () => {
      const nb = window.jupyterapp.shell.currentWidget.content;
      const i = nb.widgets.findIndex(c => c.model.type === 'code');
      nb.activeCellIndex = i;
      if (nb.scrollToItem) await nb.scrollToItem(i, 'start');
    }""")
    page.wait_for_selector(".wlw-chat textarea", state="visible", timeout=60000)


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


def run_chat_notebook(chromium, tmp_path, env: dict | None = None) -> dict:
    """Run notebooks/chat.ipynb in JupyterLab, type a message into the widget, reload the page; return facts."""
    shutil.copy(NOTEBOOKS / "chat.ipynb", tmp_path / "chat.ipynb")
    nb = json.loads((tmp_path / "chat.ipynb").read_text())
    code_cells = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    facts: dict = {}
    with JupyterLab(tmp_path, env=env) as lab:
        page = lab.open_notebook(chromium, "chat.ipynb")
        lab.run_all(page)
        outs = wait_notebook(lab, page, len(code_cells), timeout=3000)

        ask_out = text_of(outs[code_cells[2]])
        facts["answer"] = ask_out.strip().splitlines()[0] if ask_out.strip() else ""
        facts["stats1"] = ast.literal_eval(ask_out.strip().splitlines()[-1])
        scroll_to_widget(page)
        facts["shown"] = page.evaluate(
            "() => [...document.querySelectorAll('.wlw-msg')].map(e => [e.dataset.role, e.textContent])")
        facts["stats2"] = ast.literal_eval(text_of(outs[code_cells[3]]).strip().splitlines()[-1])
        facts["complete"] = text_of(outs[code_cells[-1]])
        state = kernel(page, "import json; print(json.dumps({'messages': chat.messages, 'stats': chat.stats}))")
        facts["messages"] = state["messages"]

        # a message typed into the widget reaches Python and gets an answer
        n_before = len(state["messages"])
        scroll_to_widget(page)
        page.fill(".wlw-chat textarea", "Thank you!")
        page.press(".wlw-chat textarea", "Enter")
        deadline = time.monotonic() + 1800
        while True:
            msgs = kernel(page, "import json; print(json.dumps(chat.messages))")
            if len(msgs) >= n_before + 2:
                break
            assert time.monotonic() < deadline, msgs
            time.sleep(2)
        facts["typed"] = msgs[n_before:]

        # reload the page: the widget loads the model again from the browser's cache
        facts["sent_before_reload"] = kernel(page, "import json; print(json.dumps(chat.bytes_sent))")
        page.reload()
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                               " && window.jupyterapp.shell.currentWidget.sessionContext", timeout=120000)
        lab.wait_kernel_idle(page, 120)
        deadline = time.monotonic() + 1800
        while True:
            st = kernel(page, "import json; print(json.dumps({'ready': chat._ch.ready_count, 'status': chat.status,"
                              " 'sent': chat.bytes_sent, 'load': chat._load_info}))")
            if st["ready"] >= 2 and st["status"] == "ready" and st["load"]:
                break
            assert st["status"] != "error", st
            assert time.monotonic() < deadline, st
            time.sleep(2)
        facts["after_reload"] = st
    return facts


def check_mechanics(f: dict) -> None:
    roles = [m["role"] for m in f["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"], roles
    assert f["messages"][0]["content"] == "What is the capital of France?"
    assert f["messages"][1]["content"].startswith(f["answer"].strip()[:20])
    assert [r for r, _ in f["shown"]][:2] == ["user", "assistant"]
    assert f["shown"][0][1] == "What is the capital of France?"
    assert f["stats1"]["completion_tokens"] >= 1 and f["stats2"]["completion_tokens"] >= 1
    assert "'prompt_tokens'" in f["complete"], f["complete"]  # complete()'s usage dict was displayed
    assert f["typed"][0] == {"role": "user", "content": "Thank you!"}
    assert f["typed"][1]["role"] == "assistant" and f["typed"][1]["content"]
    # nothing sent to the reloaded page: the engine and the model came from its Cache Storage
    assert f["after_reload"]["sent"] == f["sent_before_reload"]
    assert f["after_reload"]["load"]["bytes_installed"] == 0


@pytest.mark.xfail(run=False, reason="hangs after the notebook ran in the full suite (clean-clone run, 2026-11-25): the page-side steps after run-all never finish; not yet diagnosed, see the closing note")
def test_chat_notebook_runs_in_jupyterlab_with_the_tiny_model(chromium, tmp_path, tiny_model_folder):
    facts = run_chat_notebook(chromium, tmp_path, env={"WEBLLM_WIDGET_MODEL": str(tiny_model_folder)})
    check_mechanics(facts)


@pytest.mark.slow
@pytest.mark.xfail(run=False, reason="hangs after the notebook ran in the full suite (clean-clone run, 2026-11-25): the page-side steps after run-all never finish; not yet diagnosed, see the closing note")
def test_chat_notebook_answers_paris_with_the_built_in_model(chromium, tmp_path):
    facts = run_chat_notebook(chromium, tmp_path)
    check_mechanics(facts)
    assert "Paris" in facts["answer"], facts["answer"]
    assert "Paris" in facts["messages"][1]["content"]
    assert any(r == "assistant" and "Paris" in t for r, t in facts["shown"]), facts["shown"]
    # second question: the KV cache holds the first turn, so only the new tokens are prefilled, fewer than
    # the first prompt (system prompt + question); a cold prefill would cover both turns, more than that
    assert facts["stats2"]["prompt_tokens"] < facts["stats1"]["prompt_tokens"], (facts["stats1"], facts["stats2"])
