"""The message shapes of ``Chat``: OpenAI chat-completion request and result, the conversation sent with a
question, and text made safe for Jupyter's UTF-8 transport."""
from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
import time

import pytest

from webllm_widget import BadRequest, Chat, UnsupportedParameter
from webllm_widget.widgets.messages import clean_messages, clean_text, conversation
from webllm_widget.widgets.openai_format import chat_completion, request_messages


def test_request_messages_keep_role_and_content_and_must_end_with_the_user():
    msgs = request_messages([{"role": "system", "content": "s", "name": "x"}, {"role": "user", "content": "hi\ud800"}])
    assert msgs == [{"role": "system", "content": "s"}, {"role": "user", "content": "hi\ufffd"}]
    for bad in ([], [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]):
        with pytest.raises(ValueError, match="end with a user message"):
            request_messages(bad)


def test_chat_completion_has_the_openai_shape_and_the_page_numbers():
    before = int(time.time())
    usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9, "decode_tokens_per_s": 3.5,
             "prefill_tokens_per_s": 40.0, "time_to_first_token_s": 0.2, "e2e_latency_s": 0.8, "extra": 1}
    out = chat_completion("ask-3", "tiny", "Paris", {"text": "Paris", "finish_reason": "stop", "usage": usage})
    assert before <= out.pop("created") <= int(time.time())
    assert out == {
        "id": "chatcmpl-ask-3", "object": "chat.completion", "model": "tiny",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
        "timings": {"prefill_tokens_per_s": 40.0, "decode_tokens_per_s": 3.5, "time_to_first_token_s": 0.2,
                    "e2e_latency_s": 0.8},
    }
    # no result (or no usage): zero counts and empty timings, still valid JSON
    empty = chat_completion("ask-4", "tiny", "", None)
    assert empty["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert set(empty["timings"].values()) == {None} and empty["choices"][0]["finish_reason"] is None
    json.dumps(empty)


def test_clean_text_replaces_lone_surrogates_so_utf8_encoding_works():
    assert clean_text("ok \U0001F600") == "ok \U0001F600"
    broken = "half \ud83d emoji"
    with pytest.raises(UnicodeEncodeError):
        broken.encode("utf-8")
    assert clean_text(broken) == "half \ufffd emoji"
    assert clean_messages([{"role": "user", "content": "\udc00"}, "other"]) == [
        {"role": "user", "content": "\ufffd"}, "other"]


def test_conversation_puts_the_system_prompt_first_and_the_question_last():
    turns = [{"role": "system", "content": "old"}, {"role": "user", "content": "q0", "id": 1},
             {"role": "assistant", "content": "a0"}]
    assert conversation("be brief", turns, "q1") == [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "q0"},
        {"role": "assistant", "content": "a0"}, {"role": "user", "content": "q1"}]
    assert conversation("", [], "q") == [{"role": "user", "content": "q"}]


def test_unsupported_and_bad_parameters_are_named_before_anything_is_sent():
    chat = Chat(model="default", autoload=False)

    async def complete(**kw):
        return await chat.complete([{'role': 'user', 'content': 'hi'}], **kw)

    def ask(**kw):
        # asyncio.run in a thread of its own: in the full suite this thread may hold Playwright's running loop
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, complete(**kw)).result()

    for name, value in (("tools", [{"type": "function", "function": {"name": "f"}}]), ("audio", {}),
                        ("functions", [{}])):
        with pytest.raises(UnsupportedParameter, match=name) as ei:
            ask(**{name: value})
        assert ei.value.parameter == name
    for kw, name in (({"n": 0}, "n"), ({"top_logprobs": 3}, "top_logprobs"), ({"logit_bias": {"x": 1}}, "logit_bias"),
                     ({"logit_bias": {5: 300}}, "logit_bias"), ({"response_format": {"type": "yaml"}}, "response_format")):
        with pytest.raises(BadRequest, match=name):
            ask(**kw)
    with pytest.raises(UnsupportedParameter, match="n"):
        ask(n=2, stream=True)
    with pytest.raises(TypeError, match="tempreature"):
        ask(tempreature=0)
