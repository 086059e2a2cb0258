"""JupyterLab and Notebook 7 end to end: notebooks/chat.ipynb run in a real ``jupyter lab`` / ``jupyter notebook``
server and page in the WebGPU Chromium.

Real server, real kernel, real Chat widget, real engine in the page. Every run checks the mechanics (answers, DOM,
messages, KV-cache reuse, typing in the widget, reload from the page's cache). In JupyterLab the built-in SmolLM2
(device "auto": the page's CPU build on this software adapter) also shows the answer is right ("Paris") and the
widget takes the light and dark themes' colours; in Notebook 7 the tiny random-weight model runs on WebGPU. (A
JupyterLab run of the tiny model checked nothing the built-in model's run does not: JupyterLab with a Chat on WebGPU
is also run by test_inside_the_llm_jupyter (SmolLM2) and test_prompt_lab_jupyter (the tiny models).)
"""
from __future__ import annotations

import ast
import json
import re
import shutil
import time
from pathlib import Path

import pytest

from jupyter import NOTEBOOKS, JupyterServer, kernel, text_of, wait_notebook

pytestmark = [pytest.mark.browser, pytest.mark.jupyter]

def scroll_to_widget(page) -> None:
    """JupyterLab 4 renders only the cells in view: bring the Chat widget's cell (the first code cell) back."""
    page.evaluate("""async () => {
      const nb = window.jupyterapp.shell.currentWidget.content;
      const i = nb.widgets.findIndex(c => c.model.type === 'code');
      nb.activeCellIndex = i;
      if (nb.scrollToItem) await nb.scrollToItem(i, 'start');
    }""")
    page.wait_for_selector(".wlw-chat textarea", state="visible", timeout=60000)


def wait_kernel_state(page, code: str, ok, timeout: float, what: str) -> dict:
    """Poll ``kernel(page, code)`` until ``ok(state)``; fail at once when the Chat reports an error."""
    deadline = time.monotonic() + timeout
    while True:
        st = kernel(page, code)
        if ok(st):
            return st
        assert not st.get("error"), f"{what}: the Chat reported an error: {st}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s: {st}"
        time.sleep(1)


STATE = ("import json; print(json.dumps({'messages': chat.messages, 'error': chat.error, 'status': chat.status,"
         " 'stats': chat.stats,"
         " 'ready': chat._ch.ready_count, 'sent': chat.bytes_sent, 'over_http': chat._blobs.bytes_published,"
         " 'load_id': chat._load_reply.id,"
         " 'loaded': chat._load_reply.done() and chat._load_info is not None, 'load': chat._load_info}))")


#: The widget's colours and the JupyterLab theme variables they come from, as the page computes them.
COLOURS = """() => {
  const chat = document.querySelector('.wlw-chat');
  const probe = (prop, v) => { const e = document.createElement('div'); e.style.setProperty(prop, `var(${v})`);
    document.body.append(e); const c = getComputedStyle(e).getPropertyValue(prop); e.remove(); return c; };
  const cs = getComputedStyle(chat);
  return {bg: cs.backgroundColor, fg: cs.color, send: getComputedStyle(chat.querySelector('.wlw-send')).backgroundColor,
          user: getComputedStyle(chat.querySelector('.wlw-msg.wlw-user')).backgroundColor,
          theme: {bg: probe('background-color', '--jp-layout-color1'), fg: probe('color', '--jp-ui-font-color1'),
                  brand: probe('background-color', '--jp-brand-color1')}};
}"""

#: Where the README's screenshots of the widget are written (by the built-in model's run).
DOCS = Path(__file__).resolve().parents[2] / "docs"


def theme_shots(lab, page, out_dir: Path) -> dict:
    """The widget in JupyterLab's light and dark themes: its computed colours (and the theme variables'), and a
    screenshot of each in ``out_dir`` (chat-light.png, chat-dark.png). Leaves the light theme on."""
    out = {}
    size = page.viewport_size
    page.set_viewport_size({"width": 1280, "height": 1200})  # the whole widget in view
    # JupyterLab's own notices (the news toast) would cover the widget's corner
    hide = page.add_style_tag(content=".Toastify { display: none !important; }")
    try:
        for name, theme in (("light", "JupyterLab Light"), ("dark", "JupyterLab Dark")):
            lab.set_theme(page, theme)
            scroll_to_widget(page)
            page.evaluate("""() => { document.activeElement && document.activeElement.blur();
                document.querySelector('.wlw-chat .wlw-messages').scrollTop = 0; }""")  # the first question first
            out[name] = page.evaluate(COLOURS)
            path = out_dir / f"chat-{name}.png"
            page.locator(".wlw-chat").first.screenshot(path=str(path))
            out[name]["png"] = str(path)
    finally:
        hide.evaluate("e => e.remove()")
        if size:
            page.set_viewport_size(size)
        lab.set_theme(page, "JupyterLab Light")
    return out


def run_chat_notebook(chromium, tmp_path, env: dict | None = None, answer_timeout: float = 600, app: str = "lab",
                      shots: Path | None = None) -> dict:
    """Run notebooks/chat.ipynb in ``jupyter lab`` or ``jupyter notebook`` (``app``), type a message into the widget,
    reload the page; return facts. With ``shots`` (JupyterLab), screenshots of the widget in the light and dark
    themes go there."""
    shutil.copy(NOTEBOOKS / "chat.ipynb", tmp_path / "chat.ipynb")
    nb = json.loads((tmp_path / "chat.ipynb").read_text())
    code_cells = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    facts: dict = {}
    with JupyterServer(tmp_path, app=app, env=env) as lab:
        try:
            page = lab.open_notebook(chromium, "chat.ipynb")
            lab.record_comm(page)
            lab.record_widget(page)  # the load's progress bar and the tok/s line, as they change
            lab.run_all(page)
            outs = wait_notebook(lab, page, len(code_cells), timeout=answer_timeout * 4)
            facts["outputs"] = [text_of(outs[i]) for i in code_cells]
            facts["stats1"] = ast.literal_eval(facts["outputs"][2].strip().splitlines()[-1])
            facts["stats2"] = ast.literal_eval(facts["outputs"][3].strip().splitlines()[-1])
            state = kernel(page, STATE)
            facts["messages"] = state["messages"]
            facts["route"] = lab.route_status()  # what the server extension's HTTP route served this page
            scroll_to_widget(page)
            facts["shown"] = page.evaluate(
                "() => [...document.querySelectorAll('.wlw-chat .wlw-msg')].map(e => [e.dataset.role, e.textContent])")

            # a message typed into the widget reaches Python and gets an answer
            n_before = len(state["messages"])
            page.fill(".wlw-chat textarea", "Thank you!")
            page.press(".wlw-chat textarea", "Enter")
            state = wait_kernel_state(page, STATE, lambda st: len(st["messages"]) >= n_before + 2, answer_timeout,
                                      "the message typed in the widget")
            facts["typed"] = state["messages"][n_before:]
            facts["typed_shown"] = page.evaluate(
                "() => [...document.querySelectorAll('.wlw-chat .wlw-msg')].slice(-2).map(e => e.textContent)")
            page.wait_for_function("() => !document.querySelector('.wlw-chat .wlw-stats').textContent"
                                   ".startsWith('generating')")
            facts["stats_shown"], facts["stats_typed"] = page.text_content(".wlw-chat .wlw-stats"), state["stats"]
            facts["samples"] = lab.widget_samples(page)
            if shots is not None:
                facts["themes"] = theme_shots(lab, page, shots)

            # reload the page: the new page loads the engine and the model again, from its Cache Storage
            before = state
            # save first, as a user would (JupyterLab asks before leaving unsaved changes): the saved outputs hold
            # the widget's view, which the reloaded page shows again
            page.evaluate("() => window.jupyterapp.shell.currentWidget.context.save()")
            page.reload()
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext", timeout=120000)
            lab.wait_kernel_idle(page, 120)
            after = wait_kernel_state(
                page, STATE, lambda st: st["ready"] > before["ready"] and st["load_id"] != before["load_id"]
                and st["loaded"] and st["status"] == "ready", answer_timeout, "the load after the reload")
            facts["before_reload"], facts["after_reload"] = before, after
            scroll_to_widget(page)
            facts["shown_after_reload"] = page.evaluate(
                "() => [...document.querySelectorAll('.wlw-chat .wlw-msg')].map(e => e.textContent)")
            # The reloaded page's KV cache is empty: turn 2's conversation costs a full prefill there. That is
            # the cold count to compare turn 2's (warm) prefill with; it is also an answer after the reload.
            facts["cold2"] = kernel(page, "import json; r = await chat.complete(messages=chat.messages[:3], max_tokens=1);"
                                          " print(json.dumps(r))", timeout=answer_timeout)
            facts["console_errors"] = lab.console_errors()
        except BaseException:
            try:
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
                print("console:", *lab.console[-40:], sep="\n")
                print("comm:", *lab.comm_log(page)[-80:], sep="\n")
                print("outputs:", lab.outputs_text(page)[-3000:])
            except Exception:
                pass
            raise
    return facts


def norm(text: str) -> str:
    return " ".join(text.split())


def check_progress_and_speed(f: dict) -> None:
    """The load's progress bar and its text agree and were seen moving; the live tok/s line was seen while the
    typed answer streamed; the last answer's line shows the kernel's chat.stats."""
    bars = [s["progress"] for s in f["samples"] if s["progress"]]
    assert bars, f["samples"][:20]
    for b in bars:
        m = re.search(r"(\d+)%", b["text"])
        assert m and int(m.group(1)) == int(b["value"] * 100), b  # the bar and its text say the same
        assert re.match(r"(Copying the model into this page|Loading weights onto the GPU|Compiling GPU shaders|"
                        r"Downloading the model|Ready|install|load|compile)", b["text"]), b
    assert len({b["text"] for b in bars}) >= 2, bars  # it moved
    assert any(re.fullmatch(r"generating · \d+ tokens · \d+\.\d\d tok/s", s["stats"]) for s in f["samples"]), (
        [s["stats"] for s in f["samples"]][-20:])
    st = f["stats_typed"]
    assert f["stats_shown"] == (f"prefill {st['prompt_tokens']} tokens at {st['prefill_tokens_per_s']:.1f} tok/s · "
                                f"decode {st['completion_tokens']} tokens at {st['decode_tokens_per_s']:.2f} tok/s"), (
        f["stats_shown"], st)


def check_themes(themes: dict) -> None:
    """In each theme the widget's colours are JupyterLab's own (theme variables), and the two themes differ."""
    for name in ("light", "dark"):
        c = themes[name]
        assert (c["bg"], c["fg"], c["send"]) == (c["theme"]["bg"], c["theme"]["fg"], c["theme"]["brand"]), (name, c)
        assert Path(c["png"]).stat().st_size > 5000
    assert themes["light"]["bg"] != themes["dark"]["bg"] and themes["light"]["fg"] != themes["dark"]["fg"], themes
    assert themes["light"]["user"] != themes["dark"]["user"], themes


def check_mechanics(f: dict) -> None:
    check_progress_and_speed(f)
    msgs = f["messages"]
    # the notebook asks three questions (ask, stream, send); chat.messages holds every turn, in order
    assert [m["role"] for m in msgs] == ["user", "assistant"] * 3, msgs
    assert msgs[0]["content"] == "What is the capital of France?"
    assert msgs[2]["content"] == "What language do people speak there?"
    answer = msgs[1]["content"]
    assert answer.strip(), msgs
    assert f["outputs"][2].startswith(answer.strip()[:20]), f["outputs"][2]  # what `await chat.ask()` returned
    # the widget's DOM shows the same conversation
    assert [r for r, _ in f["shown"]] == [m["role"] for m in msgs], f["shown"]
    assert f["shown"][0][1] == "What is the capital of France?"
    assert norm(f["shown"][1][1]) == norm(answer), (f["shown"][1][1], answer)
    assert f["stats1"]["completion_tokens"] >= 1 and f["stats2"]["completion_tokens"] >= 1
    # the first load came over the server extension's HTTP route, not the comm: the server counted the bytes the
    # page fetched, and they are the kernel's blob bytes (engine, library, weights, tokenizer)
    assert f["route"]["blobs_served"] >= 3 and f["route"]["bytes_served"] > 0, f["route"]
    assert f["before_reload"]["over_http"] == f["before_reload"]["sent"] == f["route"]["bytes_served"], (
        f["route"], f["before_reload"])
    # turn 2 reused the KV cache: it prefilled fewer tokens than the same conversation from an empty cache, by at
    # least the whole first prompt (which a cold prefill has to run again)
    cold = f["cold2"]["usage"]["prompt_tokens"]
    assert f["stats2"]["prompt_tokens"] <= cold - f["stats1"]["prompt_tokens"], (f["stats1"], f["stats2"], cold)
    assert "'prompt_tokens'" in f["outputs"][-1], f["outputs"][-1]  # complete()'s usage dict was displayed
    # typed in the page: recorded in the kernel's chat.messages with its answer, and shown
    assert f["typed"][0] == {"role": "user", "content": "Thank you!"}, f["typed"]
    assert f["typed"][1]["role"] == "assistant" and f["typed"][1]["content"].strip(), f["typed"]
    assert f["typed_shown"][0] == "Thank you!" and norm(f["typed_shown"][1]) == norm(f["typed"][1]["content"])
    # after the reload: nothing sent (engine and model came from the page's Cache Storage), conversation shown,
    # and it answers again
    assert f["after_reload"]["sent"] == f["before_reload"]["sent"], (f["before_reload"]["sent"], f["after_reload"]["sent"])
    assert f["after_reload"]["load"]["bytes_installed"] == 0, f["after_reload"]["load"]
    assert f["shown_after_reload"][0] == "What is the capital of France?"
    assert len(f["shown_after_reload"]) == len(msgs) + 2, f["shown_after_reload"]
    assert f["cold2"]["choices"][0]["finish_reason"] in ("length", "stop"), f["cold2"]
    assert not [m for m in f["console_errors"] if "Uncaught" in m or m.startswith("pageerror")], f["console_errors"]


@pytest.fixture(scope="module")
def tiny_chat_folder() -> Path:
    """The tiny Llama with a 1,024-token context: the notebook's three turns, the typed one and their template
    tokens outgrow the default tiny model's 256 (the typed message then fails with context-overflow)."""
    from tiny import tiny_folder

    return tiny_folder("seed0-ctx1024")


def test_chat_notebook_runs_in_notebook7_with_the_tiny_model(chromium, tmp_path, tiny_chat_folder):
    facts = run_chat_notebook(chromium, tmp_path, env={"WEBLLM_WIDGET_MODEL": str(tiny_chat_folder)}, app="notebook")
    check_mechanics(facts)


@pytest.mark.slow
def test_chat_notebook_answers_paris_with_the_built_in_model(chromium, tmp_path):
    # device "auto" (the notebook's default): the page's CPU build on this software WebGPU adapter
    # its screenshots in the light and dark themes are the README's (docs/chat-light.png, docs/chat-dark.png)
    facts = run_chat_notebook(chromium, tmp_path, shots=DOCS)
    check_mechanics(facts)
    check_themes(facts["themes"])
    assert facts["after_reload"]["load"]["device"] in ("cpu", "webgpu")
    answer = facts["messages"][1]["content"]
    assert "Paris" in answer, answer
    assert "Paris" in facts["outputs"][2]
    assert "Paris" in facts["shown"][1][1], facts["shown"]
