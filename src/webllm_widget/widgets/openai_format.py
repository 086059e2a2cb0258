"""OpenAI chat-completion shapes for :meth:`Chat.complete`: the request's parameters checked and turned into the
page's generation settings, the request's messages cleaned, and the page's answer written as a ``chat.completion``
object (or ``chat.completion.chunk`` objects when streamed).

The shapes are OpenAI's; ``openai.types.chat`` (the ``openai`` package, when installed) validates them in the
drop-in client (:mod:`webllm_widget.widgets.openai_client`), which returns those typed objects. Here they are
plain dicts, so the widget needs no ``openai`` install.
"""
from __future__ import annotations

import time
import warnings
from typing import Any

from ..errors import BadRequest, UnsupportedParameter
from .messages import clean_messages
from .tool_calls import TOOL_PARAMS, ToolPlan, tool_message

#: Keys of the ``usage`` object (integers; 0 when the page did not count them).
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
#: Speed numbers copied from the page's usage into ``timings`` (None when absent).
TIMING_KEYS = ("prefill_tokens_per_s", "decode_tokens_per_s", "time_to_first_token_s", "e2e_latency_s")
#: Copied too when the answer had a grammar (response_format, tools): its compile time and its cost per token.
GRAMMAR_TIMING_KEYS = ("grammar_init_s", "grammar_per_token_s")

#: Request parameters sent to the page as they are (after the checks in :func:`request_settings`).
PAGE_PARAMS = ("temperature", "top_p", "max_tokens", "seed", "stop", "frequency_penalty", "presence_penalty",
               "repetition_penalty", "n", "logprobs", "top_logprobs", "logit_bias", "response_format")
#: Parameters of OpenAI's chat.completions.create that are taken but do not change the answer.
ACCEPTED = ("model", "user", "stream", "stream_options", "max_completion_tokens", "timeout")
#: Parameters of OpenAI's chat.completions.create that no engine here honours: named in the error.
UNSUPPORTED = {
    "functions": "function calling (the older form of tools) is not supported",
    "function_call": "function calling (the older form of tools) is not supported",
    "audio": "the models here produce text only", "modalities": "the models here produce text only",
    "prediction": "predicted outputs are not supported", "reasoning_effort": "not a reasoning model",
    "service_tier": "there is no service tier in the page", "store": "nothing is stored: the model runs in the page",
    "metadata": "nothing is stored: the model runs in the page", "web_search_options": "the page has no web search",
    "extra_headers": "no HTTP request is made", "extra_query": "no HTTP request is made",
    "extra_body": "no HTTP request is made", "verbosity": "not supported by these models",
    "prompt_cache_key": "no prompt cache service", "safety_identifier": "no safety service",
}
#: Most choices one request may ask for (they are generated one after another).
MAX_N = 16
#: Most alternatives per token (OpenAI's limit).
MAX_TOP_LOGPROBS = 20


def openai_usage(u: dict) -> dict:
    """OpenAI's ``usage`` of the page's: ``prompt_tokens`` counts the whole prompt, its tokens found in the KV
    cache included (the page counts only those it prefilled), and ``prompt_tokens_details.cached_tokens`` says how
    many were found there (present when the engine reports it)."""
    prompt, done, cached = (int(u.get(k) or 0) for k in ("prompt_tokens", "completion_tokens", "cached_tokens"))
    out = {"prompt_tokens": prompt + cached, "completion_tokens": done, "total_tokens": prompt + cached + done}
    if u.get("cached_tokens") is not None:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def unsupported(name: str, why: str) -> UnsupportedParameter:
    return UnsupportedParameter(f"{name}: {why}. Leave `{name}` out of the request.", detail={"parameter": name})


def _is_model_class(x: Any) -> bool:
    try:
        from pydantic import BaseModel
    except ImportError:  # pragma: no cover - pydantic comes with anywidget's dependencies
        return False
    return isinstance(x, type) and issubclass(x, BaseModel)


def response_format_of(value: Any) -> tuple[dict | None, type | None]:
    """OpenAI's ``response_format`` (a dict, or a Pydantic model class) as the page takes it, and the model class
    to validate the answer with (None for a dict)."""
    if value is None:
        return None, None
    if _is_model_class(value):
        schema = value.model_json_schema()
        return {"type": "json_schema", "json_schema": {"name": value.__name__, "schema": schema, "strict": True}}, value
    if not isinstance(value, dict) or "type" not in value:
        raise BadRequest("response_format must be a dict with a 'type' ({'type': 'json_object'}, {'type': "
                         "'json_schema', 'json_schema': {'name': ..., 'schema': {...}}}, {'type': 'grammar', "
                         "'grammar': EBNF}) or a Pydantic model class", detail={"parameter": "response_format"})
    kind = value["type"]
    if kind == "text":
        return None, None
    if kind == "json_object":
        return {"type": "json_object"}, None
    if kind == "json_schema":
        js = value.get("json_schema")
        if not isinstance(js, dict) or not isinstance(js.get("schema"), (dict, bool)):
            raise BadRequest("response_format json_schema needs {'json_schema': {'name': ..., 'schema': {...}}}",
                             detail={"parameter": "response_format"})
        return {"type": "json_schema", "json_schema": {"name": js.get("name"), "schema": js["schema"],
                                                       "strict": js.get("strict")}}, None
    if kind == "grammar":
        if not isinstance(value.get("grammar"), str) or not value["grammar"].strip():
            raise BadRequest("response_format grammar needs {'type': 'grammar', 'grammar': '<EBNF, root rule "
                             "first>'}", detail={"parameter": "response_format"})
        return {"type": "grammar", "grammar": value["grammar"]}, None
    raise BadRequest(f"response_format type {kind!r} is not one of text, json_object, json_schema, grammar",
                     detail={"parameter": "response_format"})


def request_settings(params: dict, loaded_model: str | None = None) -> tuple[dict, dict]:
    """Split ``params`` (the keyword arguments of an OpenAI chat.completions.create call, ``messages`` excluded)
    into the page's generation settings and what shapes the reply (``stream``, ``include_usage``, ``parse``:
    the Pydantic class to validate with, ``timeout``). Raises :class:`UnsupportedParameter` naming a parameter no
    engine here honours, :class:`BadRequest` for a value out of range, TypeError for a name OpenAI does not have."""
    settings: dict = {}
    opts: dict = {"stream": False, "include_usage": False, "parse": None, "timeout": None,
                  "tools": {k: params[k] for k in TOOL_PARAMS if params.get(k) is not None}}
    for name, value in params.items():
        if name in UNSUPPORTED:
            raise unsupported(name, UNSUPPORTED[name])
        if name not in PAGE_PARAMS and name not in ACCEPTED and name not in TOOL_PARAMS:
            raise TypeError(f"unknown parameter {name!r}; known: {', '.join(PAGE_PARAMS + ACCEPTED + TOOL_PARAMS)}")
    for name in PAGE_PARAMS:
        if params.get(name) is not None:
            settings[name] = params[name]
    if params.get("max_completion_tokens") is not None:
        settings.setdefault("max_tokens", params["max_completion_tokens"])
    model = params.get("model")
    if model is not None and loaded_model is not None and str(model) != loaded_model:
        warnings.warn(f"model={model!r}: this Chat answers with its own model, {loaded_model} (the reply's `model` "
                      "says so); load another model with chat.load(...) or a second Chat", stacklevel=3)
    if isinstance(settings.get("stop"), str):
        settings["stop"] = [settings["stop"]]
    n = settings.get("n")
    if n is not None:
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_N:
            raise BadRequest(f"n must be an integer from 1 to {MAX_N}, not {n!r}", detail={"parameter": "n"})
        if n == 1:
            del settings["n"]
    seed = settings.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise BadRequest(f"seed must be an integer, not {seed!r}", detail={"parameter": "seed"})
    k = settings.get("top_logprobs")
    if k is not None:
        if not isinstance(k, int) or not 0 <= k <= MAX_TOP_LOGPROBS:
            raise BadRequest(f"top_logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}, not {k!r}",
                             detail={"parameter": "top_logprobs"})
        if not settings.get("logprobs"):
            raise BadRequest("top_logprobs needs logprobs=True", detail={"parameter": "top_logprobs"})
    if "logprobs" in settings and not settings["logprobs"]:
        del settings["logprobs"]
    bias = settings.get("logit_bias")
    if bias is not None:
        if not isinstance(bias, dict):
            raise BadRequest("logit_bias maps token ids to a bias from -100 to 100, e.g. {1234: -100}",
                             detail={"parameter": "logit_bias"})
        clean = {}
        for tok, b in bias.items():
            try:
                tid = int(tok)
            except (TypeError, ValueError):
                raise BadRequest(f"logit_bias key {tok!r} is not a token id", detail={"parameter": "logit_bias"}) from None
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not -100 <= b <= 100 or tid < 0:
                raise BadRequest(f"logit_bias[{tok!r}] = {b!r}: biases go from -100 to 100 on token ids >= 0",
                                 detail={"parameter": "logit_bias"})
            clean[str(tid)] = float(b)
        settings["logit_bias"] = clean
        if not clean:
            del settings["logit_bias"]
    if "response_format" in settings:
        fmt, cls = response_format_of(settings.pop("response_format"))
        if fmt is not None:
            settings["response_format"] = fmt
        opts["parse"] = cls
    opts["stream"] = bool(params.get("stream"))
    so = params.get("stream_options")
    if so is not None:
        if not opts["stream"]:
            raise BadRequest("stream_options is only for stream=True", detail={"parameter": "stream_options"})
        opts["include_usage"] = bool(dict(so).get("include_usage"))
    if opts["stream"] and settings.get("n", 1) > 1:
        raise unsupported("n", "stream=True streams one answer; ask n > 1 without streaming")
    opts["timeout"] = params.get("timeout")
    return settings, opts


def _content_text(content: Any) -> Any:
    """A message's content: a string, or OpenAI's list of content parts (text parts joined)."""
    if isinstance(content, list):
        parts = []
        for p in content:
            if not isinstance(p, dict) or p.get("type") != "text":
                raise unsupported("messages", f"content part {p.get('type') if isinstance(p, dict) else p!r}: the "
                                  "models here read text only")
            parts.append(str(p.get("text", "")))
        return "".join(parts)
    return content


def request_messages(messages: list[dict]) -> list[dict]:
    """``messages`` reduced to ``role`` and ``content`` (text parts joined; ``developer`` read as ``system``; an
    assistant's ``tool_calls`` kept) and cleaned; raises ValueError unless the last one is the user's or a tool's
    result (that is what is answered)."""
    out = []
    for m in messages:
        m = dict(m)
        role = "system" if m["role"] == "developer" else m["role"]
        msg = {"role": role, "content": _content_text(m.get("content")) if m.get("content") is not None else ""}
        if role == "assistant" and m.get("tool_calls"):
            msg["tool_calls"] = [dict(c) for c in m["tool_calls"]]
        out.append(msg)
    msgs = clean_messages(out)
    if not msgs or msgs[-1]["role"] not in ("user", "tool"):
        raise ValueError("messages must end with a user message (or a tool's result)")
    return msgs


def _choices(text: str, result: dict, tools: ToolPlan | None = None) -> list[dict]:
    page = result.get("choices") or [{"index": 0, "text": text, "finish_reason": result.get("finish_reason")}]
    out = []
    for c in page:
        content = text if c.get("index", 0) == 0 else str(c.get("text", ""))
        message, reason = ({"role": "assistant", "content": content}, c.get("finish_reason")) if tools is None else \
            tool_message(content, c.get("finish_reason"), tools)
        choice = {"index": int(c.get("index", 0)), "message": message, "finish_reason": reason}
        if c.get("logprobs") is not None:
            choice["logprobs"] = {"content": list(c["logprobs"].get("content") or []), "refusal": None}
        out.append(choice)
    return out


def chat_completion(answer_id: str, model: str, text: str, result: dict | None, *, parse: type | None = None,
                    tools: ToolPlan | None = None) -> dict:
    """The ``chat.completion`` object of one answer: ``text`` (choice 0) and the other choices, ``finish_reason``,
    ``logprobs`` and ``usage`` of the page's ``result``, under the id ``chatcmpl-<answer_id>``. With ``parse`` (a
    Pydantic model class) each choice's message also carries ``parsed``, the validated instance; with ``tools`` (the
    request's :class:`~.tool_calls.ToolPlan`) the calls in an answer become its ``tool_calls``."""
    r = result or {}
    u = r.get("usage") or {}
    out = {
        "id": f"chatcmpl-{answer_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": _choices(text, r, tools),
        "usage": openai_usage(u),
        "timings": {**{k: u.get(k) for k in TIMING_KEYS},
                    **{k: u[k] for k in GRAMMAR_TIMING_KEYS if u.get(k) is not None}},
    }
    if parse is not None:
        for c in out["choices"]:  # an answer that calls tools has no content to parse
            c["message"]["parsed"] = None if c["message"].get("tool_calls") else parsed(c, parse)
    return out


def parsed(choice: dict, cls: type) -> Any:
    """The choice's JSON answer validated as ``cls`` (a Pydantic model); raises :class:`BadRequest` when the
    answer was cut short (its JSON is unfinished) and pydantic's ValidationError when it does not validate."""
    if choice.get("finish_reason") == "length":
        raise BadRequest("the answer reached max_tokens before its JSON was complete: ask again with a larger "
                         "max_tokens", detail={"parameter": "max_tokens"})
    return cls.model_validate_json(choice["message"]["content"])


def chunk(answer_id: str, model: str, created: int, *, content: str | None = None, role: str | None = None,
          finish_reason: str | None = None, logprobs: dict | None = None, usage: dict | None = None,
          final_usage: bool = False, tool_calls: list[dict] | None = None) -> dict:
    """One ``chat.completion.chunk``: a piece of the answer, calls (``tool_calls`` deltas: index, id, type, function
    name and arguments), its end (``finish_reason``), or (``final_usage``) the usage chunk with no choices that
    ``stream_options={"include_usage": True}`` asks for."""
    out: dict = {"id": f"chatcmpl-{answer_id}", "object": "chat.completion.chunk", "created": created, "model": model}
    if final_usage:
        u = usage or {}
        out["choices"] = []
        out["usage"] = openai_usage(u)
        return out
    delta: dict = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    choice: dict = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    if logprobs is not None:
        choice["logprobs"] = {"content": list(logprobs.get("content") or []), "refusal": None}
    out["choices"] = [choice]
    return out
