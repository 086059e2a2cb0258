"""The ``webllm-widget`` command line: every ``chat`` option reaches the terminal chat that reads it.

The engine in headless Chromium is replaced here by a recorder, because what is checked is the wiring from
the parser to the engine's constructor, the model spec and each request; the real engine answering the same
command is tests/browser/test_chat_engine.py::test_cli_chat_streams_an_answer_and_prints_speed.
"""
from __future__ import annotations

import pytest

from webllm_widget import cli
from webllm_widget.headless import terminal


class RecordingEngine:
    """Stands in for HeadlessEngine: records what the terminal chat asks of it."""

    made: list["RecordingEngine"] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.adapter = {"vendor": "test", "architecture": "", "description": "", "is_fallback": False}
        self.loaded = None
        self.requests: list[tuple[list[dict], dict]] = []
        RecordingEngine.made.append(self)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return None

    async def load(self, model):
        self.loaded = model
        return {"model": "m", "load_s": 0.0, "device": "cpu", "device_reason": "asked"}

    async def generate(self, messages, **settings):
        self.requests.append(([dict(m) for m in messages], settings))
        self.kwargs["on_event"]({"type": "delta", "text": "Paris."})  # the page streams the answer as events
        return {"text": "Paris.", "finish_reason": "stop",
                "usage": {"prompt_tokens": 3, "completion_tokens": 2}}


@pytest.fixture
def recorded(monkeypatch):
    RecordingEngine.made.clear()
    resolved: list[tuple] = []

    def resolve(model, device="auto"):
        resolved.append((model, device))
        return {"id": str(model), "prebuilt": True}

    monkeypatch.setattr(terminal, "HeadlessEngine", RecordingEngine)
    monkeypatch.setattr(terminal, "_resolve_model", resolve)
    return resolved


def test_every_chat_option_reaches_the_engine(recorded, capsys):
    rc = cli.main(["chat", "What", "is", "the", "capital?", "--model", "some-model", "--device", "cpu",
                   "--system", "Answer in one word.", "--temperature", "0", "--top-p", "0.5", "--seed", "7",
                   "--max-tokens", "9", "--fresh-profile", "--show-browser"])
    assert rc == 0
    assert recorded == [("some-model", "cpu")]
    (eng,) = RecordingEngine.made
    assert eng.kwargs["fresh_profile"] is True and eng.kwargs["headless"] is False
    (messages, settings), = eng.requests
    assert messages == [{"role": "system", "content": "Answer in one word."},
                        {"role": "user", "content": "What is the capital?"}]
    assert settings == {"temperature": 0.0, "top_p": 0.5, "seed": 7, "max_tokens": 9}
    assert capsys.readouterr().out == "Paris."


def test_chat_defaults_keep_the_profile_and_bound_the_answer(recorded):
    assert cli.main(["chat", "hello"]) == 0
    assert recorded == [(None, "auto")]
    (eng,) = RecordingEngine.made
    assert eng.kwargs["fresh_profile"] is False and eng.kwargs["headless"] is True
    (messages, settings), = eng.requests
    assert messages == [{"role": "user", "content": "hello"}]
    assert settings == {"max_tokens": 256}


def test_every_option_the_chat_parser_defines_is_read_by_the_terminal_chat():
    """An option the parser accepts but nothing reads would be silently ignored."""
    import inspect

    dests = set(vars(cli.make_parser().parse_args(["chat"]))) - {"command", "func"}
    source = inspect.getsource(terminal)
    unread = sorted(d for d in dests if f'"{d}"' not in source and f".{d}" not in source)
    assert not unread, f"chat options nothing reads: {unread}"
    assert {"system", "top_p", "fresh_profile", "show_browser", "device", "model", "prompt"} <= dests


def test_build_needs_a_source():
    with pytest.raises(SystemExit):
        cli.make_parser().parse_args(["build"])
