"""A model's tool-call format (``mlc-chat-config.json`` ``tool_calls``) applied: OpenAI tool messages written as plain
turns, the grammar that makes a call parse, and the calls read back out of an answer.

The format is read off the checkpoint's Jinja chat template when the model is built
(:func:`webllm_widget.compile.tool_calls.tool_format_from_jinja`); its keys are the texts that template writes around
the tools in the system turn, around each call in an assistant turn, and around each result in a user turn. With
it, a conversation that uses tools becomes ``system``/``user``/``assistant`` turns that both engines render with the
``conv_template`` they already have, and the prompt is what the template renders with ``tools=`` (checked in
``tests/unit/test_chat_templates.py``).

Pure Python: the kernel uses it for each request (no compiler installed), the build to check a format.
"""
from __future__ import annotations

import json
from typing import Any

__all__ = ["FORMAT_KEYS", "render_turns", "call_text", "call_begin", "call_end", "parse_calls", "call_start"]

#: The keys of a tool format (all strings).
FORMAT_KEYS = ("alone_prefix", "tools_prefix", "tools_sep", "tools_suffix", "call_prefix", "call_suffix",
               "call_sep", "content_sep", "response_role", "response_prefix", "response_suffix", "response_sep")


def dumps(x: Any) -> str:
    """JSON as chat templates write it (``transformers``' ``tojson``: ``json.dumps``, non-ASCII kept)."""
    return json.dumps(x, ensure_ascii=False)


def call_text(fmt: dict, name: str, arguments: Any) -> str:
    """One call as the template writes it in an assistant turn."""
    return call_begin(fmt, name) + dumps(arguments) + call_end(fmt)


def call_begin(fmt: dict, name: str) -> str:
    """The text of a call to ``name`` up to its arguments (what the grammar forces before them)."""
    return fmt["call_prefix"] + '{"name": ' + dumps(name) + ', "arguments": '


def call_end(fmt: dict) -> str:
    """The text of a call after its arguments."""
    return "}" + fmt["call_suffix"]


def call_start(fmt: dict) -> str:
    """The text that opens every call (the grammar's trigger when the model may choose)."""
    return fmt["call_prefix"]


def render_turns(fmt: dict, messages: list[dict], tools: list[dict] | None) -> list[dict]:
    """``messages`` (OpenAI roles; assistant ``tool_calls`` with ``function.arguments`` as JSON values; ``tool``
    results) as plain ``system``/``user``/``assistant`` turns; ``tools`` (OpenAI's list) go into the system turn, after
    the conversation's system message and ``tools_prefix``, or, without one, after ``alone_prefix`` (what the template
    writes then: its default system text, if it has one, and the tools' preamble)."""
    out: list[dict] = []
    msgs = list(messages)
    if tools:
        listed = fmt["tools_sep"].join(dumps(t) for t in tools) + fmt["tools_suffix"]
        if msgs and msgs[0]["role"] == "system":
            out.append({"role": "system", "content": msgs.pop(0)["content"] + fmt["tools_prefix"] + listed})
        else:
            out.append({"role": "system", "content": fmt["alone_prefix"] + listed})
    results: list[str] = []
    for m in msgs:
        if m["role"] == "tool":
            results.append(fmt["response_prefix"] + str(m.get("content") or "") + fmt["response_suffix"])
            continue
        if results:
            out.append({"role": fmt["response_role"], "content": fmt["response_sep"].join(results)})
            results = []
        if m["role"] == "assistant" and m.get("tool_calls"):
            calls = fmt["call_sep"].join(call_text(fmt, c["function"]["name"], c["function"]["arguments"])
                                         for c in m["tool_calls"])
            content = m.get("content") or ""
            out.append({"role": "assistant", "content": (content + fmt["content_sep"] if content else "") + calls})
        else:
            out.append({"role": m["role"], "content": m.get("content") or ""})
    if results:
        out.append({"role": fmt["response_role"], "content": fmt["response_sep"].join(results)})
    return out


def parse_calls(fmt: dict, text: str) -> tuple[str, list[dict]] | None:
    """The calls in an answer: (the text before the first call, [{"name", "arguments"}]), or None when ``text``
    holds no call or a call that does not parse (then the whole answer is content)."""
    start = text.find(fmt["call_prefix"])
    if start < 0:
        return None
    content, rest = text[:start], text[start:]
    if content.endswith(fmt["content_sep"]) and fmt["content_sep"]:
        content = content[:len(content) - len(fmt["content_sep"])]
    calls = []
    decoder = json.JSONDecoder()
    while rest.startswith(fmt["call_prefix"]):
        try:
            obj, end = decoder.raw_decode(rest, len(fmt["call_prefix"]))
        except json.JSONDecodeError:
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or "arguments" not in obj:
            return None
        calls.append({"name": obj["name"], "arguments": obj["arguments"]})
        rest = rest[end:]
        if not rest.startswith(fmt["call_suffix"]):
            return None
        rest = rest[len(fmt["call_suffix"]):]
        if rest.startswith(fmt["call_sep"] + fmt["call_prefix"]):
            rest = rest[len(fmt["call_sep"]):]
    if rest.strip():
        return None
    return content, calls
