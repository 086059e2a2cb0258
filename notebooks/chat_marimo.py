# Chat in marimo: `marimo edit notebooks/chat_marimo.py` (or `marimo run`).
#
# marimo delivers a widget's messages to Python only after the running cell ends, even while the cell awaits.
# So here a cell asks with chat.send(...), which returns at once, and the answer arrives after the cell ends;
# `await chat.ask(...)` inside a cell is refused at once (HostHoldsMessages). Shown as
# `view = mo.ui.anywidget(chat)`, every cell that reads `view.value` runs again when the page finishes an
# answer, typed in the page or asked from Python.
import marimo

__generated_with = "0.25.2"
app = marimo.App()


@app.cell
def _():
    import json
    import os
    from pathlib import Path

    import marimo as mo

    from webllm_widget import Chat, HostHoldsMessages

    return Chat, HostHoldsMessages, Path, json, mo, os


@app.cell
def _(Chat, mo, os):
    # WEBLLM_WIDGET_MODEL picks another model (a folder, a .gguf file or a prebuilt id); default: the built-in one
    chat = Chat(model=os.environ.get("WEBLLM_WIDGET_MODEL") or None, temperature=0, max_tokens=12)
    view = mo.ui.anywidget(chat)
    view
    return chat, view


@app.cell
def _(chat):
    # Ask from a cell: send() returns at once; each piece reaches on_token after this cell ends
    streamed = []
    first = chat.send("Hello! Who are you?", on_token=streamed.append)
    return first, streamed


@app.cell
async def _(HostHoldsMessages, chat):
    # Awaiting the page inside a marimo cell could never end: refused at once, saying what works instead
    try:
        await chat.ask("Is this wait refused?")
        refused = ""
    except HostHoldsMessages as e:
        refused = str(e)
    refused
    return (refused,)


@app.cell
def _(chat, mo):
    # Python asks for a long answer, and stops it (chat.stop()); the page keeps the partial text
    def ask_long(clicks):
        chat.send("Tell me a very long story.", max_tokens=4000)
        return (clicks or 0) + 1

    def stop_answer(clicks):
        chat.stop()
        return (clicks or 0) + 1

    long_answer = mo.ui.button(label="Ask for a long answer", on_click=ask_long)
    stop = mo.ui.button(label="Stop from Python", on_click=stop_answer)
    mo.hstack([long_answer, stop])
    return long_answer, stop


@app.cell
def _(Path, chat, first, json, mo, os, refused, streamed, view):
    # Runs again each time the page finishes an answer (it writes `answered`, a change marimo reacts to)
    state = {
        "answered": view.value.get("answered", 0),
        "messages": chat.messages,
        "finish_reason": chat.stats.get("finish_reason"),
        "status": chat.status,
        "backend": chat.backend,
        "first_done": first.done(),
        "first_text": first.text,
        "streamed": list(streamed),
        "refused": refused,
        "bytes_sent": chat.bytes_sent,
    }
    if os.environ.get("WEBLLM_WIDGET_RESULTS"):  # the test suite reads what Python saw
        out = Path(os.environ["WEBLLM_WIDGET_RESULTS"]) / f"state-{state['answered']}.json"
        out.write_text(json.dumps(state, default=str))
    mo.md(f"**{state['answered']} answers**, {len(chat.messages)} messages; last finish: `{state['finish_reason']}`")
    return (state,)


if __name__ == "__main__":
    app.run()
