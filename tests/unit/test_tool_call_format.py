"""``tools`` / ``tool_choice`` in the kernel: the plan a request makes (the page's grammar), the calls read back out
of an answer as OpenAI ``tool_calls`` (validated by the ``openai`` package's types), streamed deltas that add up to
the answer given whole, and the error for a model whose template calls no tools. The tool format is the one the
build reads off Qwen2.5-Instruct's own template; the prompts it makes are checked against Jinja in
test_chat_templates, the grammar and the model's calls in tests/browser/test_tool_calls.py."""
from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from chat_templates import QWEN2_5_TOOLS
from webllm_widget import BadRequest, Chat, UnsupportedParameter
from webllm_widget.compile.chat_config import conv_template_from_jinja
from webllm_widget.compile.tool_calls import tool_format_from_jinja
from webllm_widget.widgets.openai_format import chat_completion, chunk, request_settings
from webllm_widget.widgets.tool_calls import ToolStream, tool_plan

FMT = tool_format_from_jinja(QWEN2_5_TOOLS, conv_template_from_jinja(
    QWEN2_5_TOOLS, {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}))
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "local_time", "description": "now"}}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n</tool_call>'


def test_tool_choice_makes_the_grammar_the_page_constrains_the_answer_with():
    req = tool_plan({"tools": [WEATHER, TIME], "tool_choice": "required", "parallel_tool_calls": False}, FMT, "m")
    rf = req.response_format
    assert rf["type"] == "tool_calls" and rf["mode"] == "required" and rf["parallel"] is False
    assert [t["begin"] for t in rf["tags"]] == ['<tool_call>\n{"name": "get_weather", "arguments": ',
                                                '<tool_call>\n{"name": "local_time", "arguments": ']
    assert rf["tags"][0]["schema"] == WEATHER["function"]["parameters"]
    assert rf["tags"][1]["schema"] == {"type": "object", "properties": {}}  # no parameters: an empty object
    assert {t["end"] for t in rf["tags"]} == {"}\n</tool_call>"} and rf["trigger"] == "<tool_call>\n"
    named = tool_plan({"tools": [WEATHER, TIME], "tool_choice": {"type": "function", "function": {"name": "local_time"}}},
                      FMT, "m")
    assert [t["begin"] for t in named.response_format["tags"]] == [rf["tags"][1]["begin"]]
    assert named.response_format["parallel"] is False and named.tools == [WEATHER, TIME]  # the prompt lists both
    auto = tool_plan({"tools": [WEATHER]}, FMT, "m")
    assert auto.mode == "auto" and auto.response_format["mode"] == "auto" and auto.response_format["parallel"]
    none = tool_plan({"tools": [WEATHER], "tool_choice": "none"}, FMT, "m")
    assert none.response_format is None and none.tools == []
    assert tool_plan({}, None, "m") is None


@pytest.mark.parametrize("params, parameter", [
    ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools"),
    ({"tools": [WEATHER, WEATHER]}, "tools"),
    ({"tools": [{"type": "retrieval"}]}, "tools"),
])
def test_bad_tool_requests_name_their_parameter(params, parameter):
    with pytest.raises(BadRequest, match=parameter) as ei:
        tool_plan(params, FMT, "m")
    assert ei.value.detail["parameter"] == parameter


def test_tools_with_response_format_are_refused():
    with pytest.raises(BadRequest, match="response_format and tools"):
        request_settings({"tools": [WEATHER], "response_format": {"type": "json_object"}})
    settings, opts = request_settings({"tools": [WEATHER], "tool_choice": "none", "response_format": {"type": "json_object"}})
    assert settings["response_format"] == {"type": "json_object"} and opts["tools"]["tool_choice"] == "none"


def test_a_model_whose_template_calls_no_tools_is_refused_naming_the_parameter_and_the_model():
    chat = Chat(model="default", autoload=False)

    def ask(messages, **kw):
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, chat.complete(messages, **kw)).result()

    with pytest.raises(UnsupportedParameter, match=r"tools: the chat template of default does not call tools") as ei:
        ask([{"role": "user", "content": "hi"}], tools=[WEATHER])
    assert ei.value.detail == {"parameter": "tools", "model": "default"}
    history = [{"role": "user", "content": "hi"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
               {"role": "tool", "tool_call_id": "c", "content": "21"}]
    with pytest.raises(UnsupportedParameter, match="messages: the chat template of default") as ei:
        ask(history)
    with pytest.raises(UnsupportedParameter, match="tool_choice"):
        chat._settings({"tool_choice": "auto"})  # ask()/send() take no tools: complete() does


def test_calls_in_an_answer_come_back_as_openai_tool_calls():
    plan = tool_plan({"tools": [WEATHER, TIME]}, FMT, "m")
    usage = {"prompt_tokens": 5, "completion_tokens": 20, "total_tokens": 25}
    two = "Checking.\n" + CALL + "\n" + CALL.replace('"city": "Paris", "unit": "c"', '"city": "Rome"')
    out = chat_completion("a1", "m", two, {"finish_reason": "stop", "usage": usage}, tools=plan)
    reply = ChatCompletion.model_validate(out)
    c = reply.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content == "Checking."
    assert [(t.type, t.function.name, json.loads(t.function.arguments)) for t in c.message.tool_calls] == [
        ("function", "get_weather", {"city": "Paris", "unit": "c"}), ("function", "get_weather", {"city": "Rome"})]
    assert all(t.id.startswith("call_") for t in c.message.tool_calls)
    assert len({t.id for t in c.message.tool_calls}) == 2

    only = ChatCompletion.model_validate(chat_completion("a2", "m", CALL, {"finish_reason": "stop", "usage": usage},
                                                         tools=plan)).choices[0]
    assert only.message.content is None and only.message.tool_calls[0].function.arguments == '{"city": "Paris", "unit": "c"}'
    # cut at max_tokens inside a call: no calls, the text as it is
    cut = chat_completion("a3", "m", CALL[:30], {"finish_reason": "length", "usage": usage}, tools=plan)["choices"][0]
    assert cut["finish_reason"] == "length" and cut["message"] == {"role": "assistant", "content": CALL[:30]}
    text = chat_completion("a4", "m", "Sunny.", {"finish_reason": "stop", "usage": usage}, tools=plan)["choices"][0]
    assert text["finish_reason"] == "stop" and text["message"] == {"role": "assistant", "content": "Sunny."}


@pytest.mark.parametrize("answer", ["Checking.\n" + CALL, CALL, "It is <b>sunny</b>, <tool", "Sunny.\n<"])
def test_streamed_deltas_add_up_to_the_answer_given_whole(answer):
    plan = tool_plan({"tools": [WEATHER]}, FMT, "m")
    whole = ChatCompletion.model_validate(chat_completion("a", "m", answer, {"finish_reason": "stop"}, tools=plan))
    stream = ToolStream(plan)
    chunks = [chunk("a", "m", 0, role="assistant", content="")]
    for i in range(0, len(answer), 3):  # pieces that split the tags
        piece = stream.feed(answer[i:i + 3])
        if piece:
            chunks.append(chunk("a", "m", 0, content=piece))
    rest, calls, reason = stream.finish("stop")
    if rest:
        chunks.append(chunk("a", "m", 0, content=rest))
    if calls:
        chunks.append(chunk("a", "m", 0, tool_calls=calls))
    chunks.append(chunk("a", "m", 0, finish_reason=reason))
    typed = [ChatCompletionChunk.model_validate(c) for c in chunks]
    content = "".join(c.choices[0].delta.content or "" for c in typed)
    deltas = [t for c in typed for t in (c.choices[0].delta.tool_calls or [])]
    w = whole.choices[0]
    assert content == (w.message.content or "") and typed[-1].choices[0].finish_reason == w.finish_reason
    assert [(d.index, d.function.name, d.function.arguments) for d in deltas] == [
        (i, t.function.name, t.function.arguments) for i, t in enumerate(w.message.tool_calls or [])]
