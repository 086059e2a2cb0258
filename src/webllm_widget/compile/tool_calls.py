"""The tool-call format of a Jinja chat template (Qwen2.5 / Qwen3 style), read off the template by rendering it.

web-llm 0.2.85 builds prompts from the JSON ``conv_template`` (:mod:`.chat_config`), which knows turns but not
tools. A template that calls tools the Qwen2.5 way writes, inside the turns that template already has:

- the tools, one JSON object each, into the system turn, between a preamble and a closing text;
- an assistant's calls as ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`` (one per call);
- the tools' results as ``<tool_response>\\n...\\n</tool_response>`` in a user turn (consecutive results in one).

:func:`tool_format_from_jinja` finds those pieces by rendering the checkpoint's own template (``jinja2``, set up as
Hugging Face ``transformers`` renders chat templates: ``trim_blocks``, ``lstrip_blocks``, ``tojson`` as
``json.dumps`` with ``ensure_ascii=False``) for probe conversations, then renders a longer probe conversation both
ways (the template; the pieces in the turns of ``conv_template``) and keeps the format only when the two agree.
The kernel writes a request's tools, calls and results into plain turns with it
(:mod:`webllm_widget.widgets.tool_calls`), so both engines render them with the turns they already have.

A template that calls tools otherwise gets no format and a reason (:func:`tool_format_or_reason`), which the build
records as ``tool_calls_refused``: Hermes 2 Pro's and Hermes 3's ``tool_use`` template writes a system turn of its
own before the conversation's, each tool as a Python-like signature, and the results in a ``tool`` turn that ends
without the newline the other turns end with, which turns of one ``conv_template`` cannot reproduce.

No library reads a tool format out of a template (``transformers`` renders templates; it does not take them apart),
hence this module. The format is written into ``mlc-chat-config.json`` as ``tool_calls``::

    {"alone_prefix": "You are Qwen, ...\\n\\n# Tools\\n...<tools>\\n", "tools_prefix": "\\n\\n# Tools\\n...<tools>\\n",
     "tools_sep": "\\n",
     "tools_suffix": "\\n</tools>\\n...", "call_prefix": "<tool_call>\\n", "call_suffix": "\\n</tool_call>",
     "call_sep": "\\n", "content_sep": "\\n", "response_role": "user", "response_prefix": "<tool_response>\\n",
     "response_suffix": "\\n</tool_response>", "response_sep": "\\n"}
"""
from __future__ import annotations

import json
from typing import Any

from ..errors import CompileError
from ..tool_format import FORMAT_KEYS, dumps, render_turns
from .chat_config import prompt_pieces

__all__ = ["hf_render", "tool_format_from_jinja", "tool_format_or_reason"]

_SYS, _USER, _USER2, _CONTENT = "SYS-PROBE", "USER-PROBE", "USER2-PROBE", "CONTENT-PROBE"
_RESULTS = ("RESULT-PROBE-1", "RESULT-PROBE-2")


def _tool(name: str) -> dict:
    # keys out of sorted order and a non-ASCII character: a template that sorts keys or escapes is found out
    return {"type": "function", "function": {"name": name, "description": "Probé tool", "parameters": {
        "type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}},
        "required": ["zeta"]}}}


_TOOLS = [_tool("probe_one"), _tool("probe_two")]


def _call(name: str, i: int) -> dict:
    return {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": {"zeta": "é", "alpha": i}}}


def hf_render(template: str, messages: list[dict], tools: list[dict] | None = None, **kw: Any) -> str:
    """``template`` rendered as Hugging Face ``transformers`` renders chat templates (its Jinja settings and its
    ``tojson``), with ``add_generation_prompt=True``."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    env.globals["raise_exception"] = raise_exception
    args = {"messages": messages, "add_generation_prompt": True, "bos_token": "", "eos_token": "", **kw}
    if tools is not None:
        args["tools"] = tools
    return env.from_string(template).render(**args)


def _fill(conv: dict, template: str, messages: list[dict], tools: list[dict], turns: list[tuple[str, str]],
          system: str | None) -> str | None:
    """What ``template`` writes for ``messages`` where ``turns`` (the same conversation in ``conv``'s turns, then the
    open assistant turn) hold the placeholder ``\\0``; None when the rest of the two renderings differ."""
    text = "".join(prompt_pieces(conv, turns + [("assistant", None)], system=system))
    before, _, after = text.partition("\0")
    return _between(hf_render(template, messages, tools), before, after)


def _between(text: str, before: str, after: str) -> str | None:
    """``text`` less the prefix ``before`` and the suffix ``after`` (None when it lacks either)."""
    if not text.startswith(before) or not text.endswith(after) or len(text) < len(before) + len(after):
        return None
    return text[len(before):len(text) - len(after)]


def tool_format_from_jinja(template: str | None, conv: dict) -> dict | None:
    """The tool format of ``template`` in the turns of ``conv`` (its ``conv_template``), or None when the template
    does not call tools in a way these turns can carry (checked by rendering, see the module docstring)."""
    return tool_format_or_reason(template, conv)[0]


def tool_format_or_reason(template: str | None, conv: dict) -> tuple[dict | None, str | None]:
    """(the tool format, None), or (None, why not) for a template that writes tools and calls in a way the turns of
    ``conv`` cannot carry token for token, or (None, None) for a template that calls no tools."""
    if not template or "tools" not in template or "tool_call" not in template:
        return None, None
    try:
        import jinja2  # noqa: F401
    except ImportError as e:
        raise CompileError("this chat template calls tools; reading its format needs jinja2: pip install jinja2 "
                           "(it comes with webllm-widget[compile])") from e
    try:
        fmt = _derive(template, conv)
    except Exception as e:  # noqa: BLE001 - a template this reading does not fit (or that raises) has no tool format
        return None, f"rendering it with tools raised {type(e).__name__}: {e}"
    if isinstance(fmt, str):
        return None, fmt
    if not _agrees(template, conv, fmt):
        return None, ("a longer conversation (calls with content, several results, a second round) renders otherwise "
                      "than in the model's turns")
    return fmt, None


def _derive(template: str, conv: dict) -> dict | str:
    """The format, or why the template's tools, calls or results do not fit the turns of ``conv``."""
    sysmsg, user, user2 = ({"role": "system", "content": _SYS}, {"role": "user", "content": _USER},
                           {"role": "user", "content": _USER2})
    # the system turn: the tools between a preamble and a closing text, after the system message or a default
    one = _fill(conv, template, [sysmsg, user], _TOOLS[:1], [("user", _USER)], "\0")
    two = _fill(conv, template, [sysmsg, user], _TOOLS, [("user", _USER)], "\0")
    default = _fill(conv, template, [user], _TOOLS[:1], [("user", _USER)], "\0")
    j1, j2 = dumps(_TOOLS[0]), dumps(_TOOLS[1])
    if one is None or two is None or default is None or not one.startswith(_SYS):
        return ("it does not write the tools into the system turn after the conversation's system message (e.g. a "
                "system turn of its own before it)")
    if j1 not in one:
        return "it does not list each tool as its JSON object (e.g. a Python-like signature written by a macro)"
    fmt: dict[str, Any] = {}
    block = one[len(_SYS):]
    fmt["tools_prefix"], _, fmt["tools_suffix"] = block.partition(j1)
    fmt["tools_sep"] = _between(two[len(_SYS):], fmt["tools_prefix"] + j1, j2 + fmt["tools_suffix"])
    if fmt["tools_sep"] is None or not default.endswith(j1 + fmt["tools_suffix"]):
        return "its list of several tools, or its system turn without a system message, does not follow one pattern"
    # without a system message: the template's default system text (Qwen2.5) or none (Qwen3), then the preamble
    fmt["alone_prefix"] = default[:len(default) - len(j1 + fmt["tools_suffix"])]

    # an assistant turn with calls (and content), between two user turns
    def assistant(msg: dict) -> str | None:
        return _fill(conv, template, [sysmsg, user, msg, user2], _TOOLS[:1],
                     [("user", _USER), ("assistant", "\0"), ("user", _USER2)], one)

    c1, c2 = _call("probe_one", 1), _call("probe_two", 2)
    k1, k2 = (dumps({"name": c["function"]["name"], "arguments": c["function"]["arguments"]}) for c in (c1, c2))
    t1 = assistant({"role": "assistant", "content": "", "tool_calls": [c1]})
    t2 = assistant({"role": "assistant", "content": "", "tool_calls": [c1, c2]})
    tc = assistant({"role": "assistant", "content": _CONTENT, "tool_calls": [c1]})
    if t1 is None or t2 is None or tc is None or k1 not in t1:
        return "it does not write an assistant's calls as {\"name\": ..., \"arguments\": ...} in an assistant turn"
    fmt["call_prefix"], _, fmt["call_suffix"] = t1.partition(k1)
    fmt["call_sep"] = _between(t2, t1, fmt["call_prefix"] + k2 + fmt["call_suffix"])
    fmt["content_sep"] = _between(tc, _CONTENT, t1)
    if fmt["call_sep"] is None or fmt["content_sep"] is None:
        return "it drops or moves an assistant's text beside its calls, or writes several calls unlike one"

    # the results: one user turn after the calls, each result wrapped
    calls = {"role": "assistant", "content": "", "tool_calls": [c1, c2]}

    def results(n: int) -> str | None:
        return _fill(conv, template, [sysmsg, user, calls] + [{"role": "tool", "content": r} for r in _RESULTS[:n]],
                     _TOOLS[:1], [("user", _USER), ("assistant", t2), ("user", "\0")], one)

    r1, r2 = results(1), results(2)
    if r1 is None or r2 is None or _RESULTS[0] not in r1:
        return ("it writes tool results otherwise than in a user turn of the model's turns (e.g. a 'tool' turn, or "
                "one that ends without the newline every other turn ends with)")
    fmt["response_role"] = "user"
    fmt["response_prefix"], _, fmt["response_suffix"] = r1.partition(_RESULTS[0])
    fmt["response_sep"] = _between(r2, r1, fmt["response_prefix"] + _RESULTS[1] + fmt["response_suffix"])
    if fmt["response_sep"] is None:
        return "it writes several results unlike one"
    return {k: fmt[k] for k in FORMAT_KEYS}


def _agrees(template: str, conv: dict, fmt: dict) -> bool:
    """A longer conversation (a call with content, two results, a user turn, a second round) renders alike both
    ways, with and without a system message."""
    c1, c2 = _call("probe_one", 1), _call("probe_two", 2)
    convo = [{"role": "user", "content": _USER},
             {"role": "assistant", "content": _CONTENT, "tool_calls": [c1]},
             {"role": "tool", "content": _RESULTS[0]},
             {"role": "assistant", "content": "", "tool_calls": [c1, c2]},
             {"role": "tool", "content": _RESULTS[0]}, {"role": "tool", "content": _RESULTS[1]},
             {"role": "assistant", "content": _CONTENT},
             {"role": "user", "content": _USER2}]
    for msgs in (convo, [{"role": "system", "content": _SYS}] + convo):
        turns = render_turns(fmt, msgs, _TOOLS)
        text = "".join(prompt_pieces(conv, [(t["role"], t["content"]) for t in turns[1:]] + [("assistant", None)],
                                     system=turns[0]["content"]))
        if text != hf_render(template, msgs, _TOOLS):
            return False
    return True
