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


def test_tools_with_response_format_hold_a_text_answer_to_the_format():
    settings, opts = request_settings({"tools": [WEATHER], "response_format": {"type": "json_object"}})
    content = settings["response_format"]
    auto = tool_plan(opts["tools"], FMT, "m", content).response_format
    # "auto": one call or JSON (the grammar's "or" takes single calls), so not parallel
    assert auto["mode"] == "auto" and auto["content"] == {"type": "json_object"} and auto["parallel"] is False
    with pytest.raises(UnsupportedParameter, match="parallel_tool_calls=True with response_format") as ei:
        tool_plan({"tools": [WEATHER], "parallel_tool_calls": True}, FMT, "m", content)
    assert ei.value.detail["parameter"] == "parallel_tool_calls"
    # "required": the answer is calls, which have their own grammar
    required = tool_plan({"tools": [WEATHER], "tool_choice": "required"}, FMT, "m", content).response_format
    assert "content" not in required and required["parallel"] is True
    settings, opts = request_settings({"tools": [WEATHER], "tool_choice": "none", "response_format": {"type": "json_object"}})
    assert settings["response_format"] == {"type": "json_object"} and opts["tools"]["tool_choice"] == "none"
    assert tool_plan(opts["tools"], FMT, "m", settings["response_format"]).response_format is None


def _run(coro):
    """Run ``coro`` on a fresh event loop in its own thread: other tests in the same process (widget hosts,
    kernels) may leave an event loop running in this thread, where asyncio.run refuses to start."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


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


class _Answers:
    """A Chat's ``complete`` with the page's answers given: the request goes through the kernel's checks and plan, and
    the answer text through the same reading as a page's (what the page would have generated is not in question
    here; tests/browser/test_tool_calls.py runs the model)."""

    model = "m"

    def __init__(self, *texts: str):
        self.texts = list(texts)
        self.requests: list[dict] = []

    async def complete(self, messages, **params):
        settings, opts = request_settings(params)
        plan = tool_plan(opts["tools"], FMT, "m", settings.get("response_format"))
        self.requests.append({"settings": settings, "plan": plan})
        return chat_completion("a", "m", self.texts.pop(0), {"finish_reason": "stop"}, parse=opts["parse"], tools=plan)


def test_parse_fills_parsed_and_parsed_arguments_as_the_openai_package_does():
    import openai
    from openai import LengthFinishReasonError
    from pydantic import BaseModel

    from webllm_widget.widgets.openai_client import AsyncOpenAIClient

    class Weather(BaseModel):
        city: str
        unit: str

    class Answer(BaseModel):
        sunny: bool

    strict_dict = {"type": "function", "function": {"name": "local_time", "strict": True, "parameters": {
        "type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"], "additionalProperties": False}}}
    tools = [openai.pydantic_function_tool(Weather, name="get_weather"), strict_dict]
    call2 = '<tool_call>\n{"name": "local_time", "arguments": {"zone": "CET"}}\n</tool_call>'
    chat = _Answers(CALL + "\n" + call2, '{"sunny": true}')
    client = AsyncOpenAIClient(chat)
    assert client.beta.chat.completions is client.chat.completions  # the older openai versions' place for parse()
    called = _run(client.chat.completions.parse(model="m", messages=[{"role": "user", "content": "?"}],
                                                tools=tools, tool_choice="required"))
    calls = called.choices[0].message.tool_calls
    assert calls[0].function.parsed_arguments == Weather(city="Paris", unit="c")
    assert calls[1].function.parsed_arguments == {"zone": "CET"}  # a strict tool given as a dict: the JSON
    assert called.choices[0].message.parsed is None and called.choices[0].finish_reason == "tool_calls"
    # the strict schema openai makes of a Pydantic class is the grammar the page gets
    assert chat.requests[0]["plan"].response_format["tags"][0]["schema"] == tools[0]["function"]["parameters"]

    # tools and response_format together: a text answer is parsed as the class
    answered = _run(client.chat.completions.parse(
        model="m", messages=[{"role": "user", "content": "?"}], tools=tools, response_format=Answer))
    assert answered.choices[0].message.parsed == Answer(sunny=True) and answered.choices[0].message.tool_calls is None
    sent = chat.requests[1]["plan"].response_format
    assert sent["mode"] == "auto" and sent["content"]["json_schema"]["schema"]["required"] == ["sunny"]

    with pytest.raises(ValueError, match="`clock` is not strict"):  # as openai's parse() refuses it
        _run(client.chat.completions.parse(model="m", messages=[{"role": "user", "content": "?"}], tools=[
            {"type": "function", "function": {"name": "clock", "parameters": {"type": "object"}}}]))
    cut = _Answers('{"sunny": tr')

    async def length(messages, **params):
        return chat_completion("b", "m", '{"sunny": tr', {"finish_reason": "length"})

    cut.complete = length
    with pytest.raises(LengthFinishReasonError):
        _run(AsyncOpenAIClient(cut).chat.completions.parse(
            model="m", messages=[{"role": "user", "content": "?"}], response_format=Answer))
