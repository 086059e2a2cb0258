"""A drop-in for ``openai.AsyncOpenAI`` backed by a :class:`Chat`: code written for the OpenAI API runs against the
model in the page with only the client line changed::

    client = chat.openai                      # instead of: client = openai.AsyncOpenAI()
    reply = await client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Hi"}])
    print(reply.choices[0].message.content)
    stream = await client.chat.completions.create(model="any", messages=msgs, stream=True)
    async for chunk in stream:
        print(chunk.choices[0].delta.content or "", end="")
    parsed = await client.chat.completions.parse(model="any", messages=msgs, response_format=MyModel)
    parsed.choices[0].message.parsed          # a validated MyModel
    called = await client.chat.completions.parse(model="any", messages=msgs, tools=[openai.pydantic_function_tool(Args)])
    called.choices[0].message.tool_calls[0].function.parsed_arguments   # a validated Args

Replies are the ``openai`` package's own types (``ChatCompletion``, ``ChatCompletionChunk``,
``ParsedChatCompletion``), validated from :meth:`Chat.complete`'s dicts. ``parse()`` is the ``openai`` package's
own: its checks of the request (only ``strict`` function tools), the strict JSON schema it makes of a Pydantic class,
and its reading of the reply (``message.parsed``, each call's ``function.parsed_arguments``,
``LengthFinishReasonError`` for an answer cut at ``max_tokens``) come from ``openai.lib._parsing``, which
``openai.AsyncOpenAI().chat.completions.parse`` runs on the server's reply. ``client.beta.chat.completions`` is the
same object, for code written against the older ``openai`` versions that kept ``parse()`` there. Only the async client has a drop-in: a
notebook cell that blocks cannot receive the page's answer (see :mod:`webllm_widget.widgets.chat`), so every call is
awaited, as with ``AsyncOpenAI``. Parameters that cannot be honoured raise
:class:`~webllm_widget.errors.UnsupportedParameter` naming them.
"""
from __future__ import annotations

from typing import Any, AsyncIterator, Protocol


class _Completing(Protocol):
    """What the client needs of its Chat (named structurally: chat.py imports this module)."""

    model: str

    async def complete(self, messages: list[dict], **settings: Any) -> Any: ...


def _openai_types():
    try:
        from openai.types.chat import ChatCompletion, ChatCompletionChunk, ParsedChatCompletion
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("chat.openai returns the openai package's types: pip install openai "
                          "(or use chat.complete(...), which returns plain dicts)") from e
    return ChatCompletion, ChatCompletionChunk, ParsedChatCompletion


class AsyncChunkStream:
    """``await client.chat.completions.create(..., stream=True)``: ``async for chunk in stream`` gives
    ``ChatCompletionChunk`` objects; ``await stream.close()`` (or leaving an ``async with``) stops the answer."""

    def __init__(self, stream: Any):
        self._stream = stream

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._stream.__aiter__()

    async def close(self) -> None:
        await self._stream.close()

    async def __aenter__(self) -> "AsyncChunkStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._stream.__aexit__(*exc)


class Completions:
    """``client.chat.completions``: :meth:`create` and :meth:`parse`, as on ``openai.AsyncOpenAI``."""

    def __init__(self, chat: _Completing):
        self._chat = chat

    async def create(self, *, messages: list[dict], **params: Any) -> Any:
        """As ``AsyncOpenAI().chat.completions.create``; the answer comes from this Chat's model."""
        ChatCompletion, ChatCompletionChunk, _ = _openai_types()
        if _is_model_class(params.get("response_format")):
            raise TypeError("create() takes a response_format dict; pass a Pydantic class to parse() instead "
                            "(as with the OpenAI client)")
        out = await self._chat.complete(list(messages), **params)
        if params.get("stream"):
            out._wrap = ChatCompletionChunk.model_validate
            return AsyncChunkStream(out)
        return ChatCompletion.model_validate(out)  # `timings` stays as an extra field (reply.timings)

    async def parse(self, *, messages: list[dict], response_format: Any = None, tools: Any = None,
                    **params: Any) -> Any:
        """As ``AsyncOpenAI().chat.completions.parse``: ``response_format`` a Pydantic model class (or a dict), and
        ``tools`` strict function tools (``openai.pydantic_function_tool(Model)``, or ``"strict": True``). Each
        choice's ``message.parsed`` is the answer validated as ``response_format``; each call's
        ``function.parsed_arguments`` its arguments validated as the tool's model (a dict for a strict tool given as
        a dict)."""
        ChatCompletion, _, _ = _openai_types()
        from openai import NOT_GIVEN
        from openai.lib._parsing import parse_chat_completion, type_to_response_format_param, validate_input_tools

        if params.get("stream"):
            raise TypeError("parse() does not stream; use create(stream=True)")
        checked = NOT_GIVEN if tools is None else list(tools)
        validate_input_tools(checked)  # ValueError for a tool that is not strict, as openai's parse() raises
        fmt = type_to_response_format_param(NOT_GIVEN if response_format is None else response_format)
        if isinstance(checked, list):
            params["tools"] = checked
        if isinstance(fmt, dict):
            params["response_format"] = fmt
        out = ChatCompletion.model_validate(await self._chat.complete(list(messages), **params))
        return parse_chat_completion(response_format=NOT_GIVEN if response_format is None else response_format,
                                     input_tools=checked, chat_completion=out)


def _is_model_class(x: Any) -> bool:
    from .openai_format import _is_model_class as check

    return check(x)


class _ChatNamespace:
    def __init__(self, chat: _Completing):
        self.completions = Completions(chat)


class _BetaNamespace:
    def __init__(self, chat: _ChatNamespace):
        self.chat = chat


class AsyncOpenAIClient:
    """``chat.openai``: the parts of ``openai.AsyncOpenAI`` a chat model answers (``.chat.completions``, also as
    ``.beta.chat.completions``)."""

    def __init__(self, chat: _Completing):
        self.chat = _ChatNamespace(chat)
        self.beta = _BetaNamespace(self.chat)
        self._owner = chat

    def __repr__(self) -> str:
        return f"<AsyncOpenAI drop-in for Chat(model={self._owner.model!r})>"
