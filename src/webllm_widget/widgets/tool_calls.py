"""OpenAI ``tools`` / ``tool_choice`` for :meth:`Chat.complete`: the request checked against the model's tool format,
its messages written as plain turns, the grammar the page constrains the answer with, and the calls read back.

A model calls tools when its chat template does (Qwen2.5 / Qwen3 style); the build reads the template's format
into ``mlc-chat-config.json`` (``tool_calls``; see :mod:`webllm_widget.tool_format`). With it:

- ``tools`` go into the system turn, an assistant's ``tool_calls`` and the ``tool`` results into the turns the
  template writes them in, so the page's prompt is what the template renders with ``tools=``;
- ``tool_choice="required"`` or a named function: the page's grammar (xgrammar structural tags, on both engines)
  admits only calls, each ``{"name": <a tool>, "arguments": <JSON valid for its parameters>}`` in the template's
  call tags, so every call parses and validates; ``"auto"``: the model may answer in text, and a call it starts is
  held to the same grammar; ``"none"``: the tools are left out of the prompt and the answer is text;
- ``response_format`` with tools: a text answer is held to it (as OpenAI does). With ``"auto"`` the grammar admits
  one call or an answer in that format (xgrammar's structural tag has no "or" over a list of calls, so
  ``parallel_tool_calls=True`` is refused there, naming it); with ``"required"`` or a named function the answer is
  calls, which have their own grammar;
- the answer's calls come back as OpenAI ``tool_calls`` (ids ``call_…``, ``type: "function"``, ``arguments`` a JSON
  string) with ``finish_reason: "tool_calls"``.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadRequest, UnsupportedParameter
from ..tool_format import call_begin, call_end, call_start, dumps, parse_calls, render_turns

#: The request parameters this module takes.
TOOL_PARAMS = ("tools", "tool_choice", "parallel_tool_calls")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def no_tool_format(model: str, parameter: str = "tools", refused: str | None = None) -> UnsupportedParameter:
    """The error for a model without a tool format; ``refused``: why its template's way of calling tools is not
    carried (the build's ``tool_calls_refused``)."""
    why = (f"its template calls tools, but {refused}, which the model's turns cannot carry token for token"
           if refused else "it writes no tool calls")
    return UnsupportedParameter(
        f"{parameter}: the chat template of {model} does not call tools in a way webllm-widget carries ({why}; "
        "webllm-widget knows the Qwen2.5 / Qwen3 style: each tool's JSON listed in the system turn, calls answered as "
        "<tool_call>{\"name\": ..., \"arguments\": ...}</tool_call>, results in a user turn; MLC prebuilt ids carry "
        "no template). Use a model whose template calls tools that way (e.g. a Qwen2.5-Instruct or Qwen3 checkpoint "
        "built by webllm-widget), or describe the tools in the system prompt and ask for their arguments with "
        f"response_format. Leave `{parameter}` out of the request for {model}.",
        detail={"parameter": parameter, "model": model, **({"refused": refused} if refused else {})})


@dataclass
class ToolPlan:
    """What a request's tools make of it: the tools the prompt lists, the mode, the page's grammar (None: free)."""

    tools: list[dict]
    mode: str  # "none", "auto" or "required" (a named function is "required" with one tool in the grammar)
    fmt: dict
    response_format: dict | None = None
    names: list[str] = field(default_factory=list)


def _check_tools(tools: Any) -> list[dict]:
    if not isinstance(tools, list) or not tools:
        raise BadRequest("tools must be a non-empty list of {'type': 'function', 'function': {'name': ..., "
                         "'description': ..., 'parameters': {JSON schema}}}", detail={"parameter": "tools"})
    out, seen = [], set()
    for i, t in enumerate(tools):
        f = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(f, dict):
            raise BadRequest(f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}",
                             detail={"parameter": "tools"})
        name = f.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise BadRequest(f"tools[{i}].function.name {name!r}: letters, digits, '_' and '-', at most 64",
                             detail={"parameter": "tools"})
        if name in seen:
            raise BadRequest(f"tools: two functions are named {name!r}", detail={"parameter": "tools"})
        seen.add(name)
        params = f.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise BadRequest(f"tools[{i}].function.parameters must be a JSON schema (a dict)",
                             detail={"parameter": "tools"})
        out.append({"type": "function", "function": {k: v for k, v in f.items() if v is not None}})
    return out


def tool_plan(params: dict, fmt: dict | None, model: str, content: dict | None = None,
              refused: str | None = None) -> ToolPlan | None:
    """The plan for ``params`` (``tools``, ``tool_choice``, ``parallel_tool_calls`` of a request), or None when the
    request names no tools; ``content`` is the request's response_format as the page takes it (the format of a text
    answer). Raises :class:`UnsupportedParameter` when the model's template calls no tools, and
    :class:`BadRequest` for a malformed value."""
    tools = params.get("tools")
    choice = params.get("tool_choice")
    if not tools:
        if choice not in (None, "none", "auto"):
            raise BadRequest(f"tool_choice {choice!r} needs tools", detail={"parameter": "tool_choice"})
        return None
    if fmt is None:
        raise no_tool_format(model, refused=refused)
    tools = _check_tools(tools)
    names = [t["function"]["name"] for t in tools]
    parallel = params.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise BadRequest("parallel_tool_calls must be True or False", detail={"parameter": "parallel_tool_calls"})
    if choice is None:
        choice = "auto"
    if isinstance(choice, dict):
        fn = choice.get("function") if choice.get("type") == "function" else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if name not in names:
            raise BadRequest(f"tool_choice {choice!r}: name one of the tools ({', '.join(names)}) as "
                             "{'type': 'function', 'function': {'name': ...}}", detail={"parameter": "tool_choice"})
        chosen, mode, parallel = [t for t in tools if t["function"]["name"] == name], "required", False
    elif choice in ("none", "auto", "required"):
        chosen, mode = tools, choice
    else:
        raise BadRequest(f"tool_choice {choice!r} is not 'none', 'auto', 'required' or {{'type': 'function', "
                         "'function': {'name': ...}}", detail={"parameter": "tool_choice"})
    if mode == "none":
        return ToolPlan(tools=[], mode="none", fmt=fmt)
    tags = [{"begin": call_begin(fmt, t["function"]["name"]),
             "schema": t["function"].get("parameters", {"type": "object", "properties": {}}),
             "end": call_end(fmt)} for t in chosen]
    rf = {"type": "tool_calls", "mode": mode, "tags": tags, "separator": fmt["call_sep"],
          "trigger": call_start(fmt), "parallel": parallel is not False}
    if content is not None and mode == "auto":
        if parallel:
            raise UnsupportedParameter(
                "parallel_tool_calls=True with response_format and tool_choice='auto': the page's grammar admits one "
                "call or an answer in the response_format, not several calls. Leave `parallel_tool_calls` out (or "
                "False), or ask with tool_choice='required' for several calls.",
                detail={"parameter": "parallel_tool_calls"})
        rf["content"], rf["parallel"] = content, False
    return ToolPlan(tools=tools, mode=mode, fmt=fmt, response_format=rf, names=names)


def _arguments(call: dict, i: int) -> Any:
    """A history call's arguments as a JSON value (OpenAI sends a JSON string; templates write the object)."""
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise BadRequest(f"messages: tool_calls[{i}] must be {{'id', 'type': 'function', 'function': {{'name', "
                         "'arguments'}}}}", detail={"parameter": "messages"})
    args = fn.get("arguments", "{}")
    if isinstance(args, str):
        try:
            return json.loads(args or "{}")
        except json.JSONDecodeError as e:
            raise BadRequest(f"messages: the arguments of call {fn['name']!r} are not JSON ({e})",
                             detail={"parameter": "messages"}) from None
    return args


def tool_turns(messages: list[dict], fmt: dict | None, plan: ToolPlan | None, model: str,
               refused: str | None = None) -> list[dict]:
    """``messages`` (roles and contents already read) as plain turns in the model's tool format; messages without
    tools, calls or results are returned as they are."""
    uses = any(m["role"] == "tool" or m.get("tool_calls") for m in messages)
    if plan is None and not uses:
        return messages
    if fmt is None:
        raise no_tool_format(model, "messages", refused)
    msgs = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [{"function": {"name": c["function"]["name"], "arguments": _arguments(c, i)}}
                     for i, c in enumerate(m["tool_calls"])]
            msgs.append({"role": "assistant", "content": m.get("content") or "", "tool_calls": calls})
        else:
            msgs.append({"role": m["role"], "content": m.get("content") or ""})
    return render_turns(fmt, msgs, plan.tools if plan is not None else None)


def call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def tool_message(text: str, finish_reason: str | None, plan: ToolPlan) -> tuple[dict, str | None]:
    """The assistant message of an answer and its finish reason: with calls in it, ``tool_calls`` (and the text
    before them as ``content``, None when empty) and ``"tool_calls"``; else the text as it is."""
    found = parse_calls(plan.fmt, text) if plan.mode != "none" and finish_reason != "length" else None
    if not found or not found[1]:
        return {"role": "assistant", "content": text}, finish_reason
    content, calls = found
    return ({"role": "assistant", "content": content or None,
             "tool_calls": [{"id": call_id(), "type": "function",
                             "function": {"name": c["name"], "arguments": dumps(c["arguments"])}} for c in calls]},
            "tool_calls")


class ToolStream:
    """Streams an answer that may hold calls: text pieces pass on until the text could be opening a call (then
    they are held), and what was held comes out at the end as content or as ``tool_calls`` deltas."""

    def __init__(self, plan: ToolPlan):
        self.plan = plan
        self._text = ""
        self._sent = 0
        self._calling = False

    def feed(self, piece: str) -> str:
        """The content to send now for ``piece`` ('' while held)."""
        self._text += piece
        if self._calling:
            return ""
        fmt = self.plan.fmt
        # a call opens the answer, or follows its text after the content separator
        openers = [fmt["content_sep"] + fmt["call_prefix"]] + ([fmt["call_prefix"]] if self._sent == 0 else [])
        keep = 0  # the longest tail that may still become an opener
        for i, opener in enumerate(openers):
            at = self._text.find(opener, self._sent) if i == 0 else (0 if self._text.startswith(opener) else -1)
            if at >= 0:
                self._calling = True
                out, self._sent = self._text[self._sent:at], at
                return out
            if i == 1 and opener.startswith(self._text):
                keep = len(self._text)
            for k in range(min(len(opener) - 1, len(self._text) - self._sent), keep, -1):
                if opener.startswith(self._text[len(self._text) - k:]):
                    keep = k
                    break
        out = self._text[self._sent:len(self._text) - keep]
        self._sent += len(out)
        return out

    def finish(self, finish_reason: str | None) -> tuple[str, list[dict], str | None]:
        """(held content to send, ``tool_calls`` deltas, the finish reason) once the answer is complete."""
        msg, reason = tool_message(self._text, finish_reason, self.plan)
        if not msg.get("tool_calls"):
            return self._text[self._sent:], [], reason
        content = msg["content"] or ""
        rest = content[self._sent:] if len(content) > self._sent else ""
        deltas = [{"index": i, "id": c["id"], "type": "function", "function": dict(c["function"])}
                  for i, c in enumerate(msg["tool_calls"])]
        return rest, deltas, reason
