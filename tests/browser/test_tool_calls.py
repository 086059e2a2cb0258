"""Tool calls from a tiny Qwen2.5-shaped model in a real page, on WebGPU and on the CPU engine.

The model is the "qwen2.5-hf" family case (random weights, so its libraries are those test_family_logits builds)
with Qwen2.5-Instruct's own chat template, which calls tools (tests/helpers/families.py ``qwen2_5_tools_hf``). Its
build reads the template's tool format into ``mlc-chat-config.json``; through the drop-in client (``chat.openai``,
the ``openai`` package's types):

- a tool result sent back (an assistant message with ``tool_calls``, then a ``role: "tool"`` message) is prefilled
  token for token as Jinja renders the template with ``tools=``: the page's prompt length equals the reference's
  and the answer's log-probabilities equal the numpy reference's run on that rendering (any token off changes them);
- ``tool_choice="required"`` and a named function: xgrammar's structural tag holds even random weights to a call,
  so the answer comes back as ``tool_calls`` whose arguments parse and validate against the function's parameters
  (``jsonschema``), with ``finish_reason`` ``"tool_calls"``, streamed as deltas too (on the CPU engine: the kernel
  cuts the deltas, alike for both engines); ``"auto"`` runs under its grammar (free text, calls held to the tags);
- (CPU engine: the grammars are the same text on both engines) ``parse()`` with a strict tool gives the call's
  ``parsed_arguments``, and tools with a ``response_format`` hold the answer to one call or JSON valid for the format.
"""
from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from tokenizers import Tokenizer

from chat_templates import QWEN2_5_TOOLS, render_like_transformers
from families import qwen2_5_tools_hf
from reference import reference_for
from webllm_widget import Chat
from webllm_widget.compile.pipeline import build_model_folder

pytestmark = pytest.mark.browser

WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"unit": {"enum": ["c", "f"]}}, "required": ["unit"]}}}
CLOCK = {"type": "function", "function": {"name": "clock", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["utc", "cet"]}}, "required": ["zone"]}}}
TOOLS = [WEATHER, CLOCK]
ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}]
#: the tiny model's context is 256 tokens: this prompt is ~150 of them, with the tool's result ~230
ROUND_TRIP = ASK + [
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"unit": "c"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
#: |logprob - reference| allowed: as test_openai_options (4-bit kernels against the dequantized reference)
TOL = 2.5e-2
#: the format of a text answer when tools and response_format come together
OK_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


#: a strict function tool, which openai's parse() reads the arguments of (a Pydantic tool's schema, with its titles,
#: would not leave room for the call in the tiny model's 256 tokens: tests/unit/test_tool_call_format.py has one)
WEATHER_STRICT = {"type": "function", "function": dict(WEATHER["function"], strict=True)}


def _folder(device: str):
    source, weights, config = qwen2_5_tools_hf()
    schedule = "fallback" if device == "webgpu" else "auto"  # the builds test_family_logits makes of these weights
    folder = build_model_folder(source, quantization="q4f32_1", device=device, schedule=schedule, progress=False)
    return folder, weights, config


def _reference_logprobs(folder, weights, config, ids: list[int]) -> tuple[list[int], np.ndarray]:
    """The reference prompt (Jinja with tools, HF tokenizers) and the log-softmax after it and after ``ids[:-1]``."""
    hf = [dict(m, tool_calls=[{"type": "function", "function": {"name": "weather", "arguments": {"unit": "c"}}}])
          if m.get("tool_calls") else m for m in ROUND_TRIP]
    text = render_like_transformers(QWEN2_5_TOOLS, hf, TOOLS)
    prompt = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    logits = reference_for(weights, config).forward(prompt + ids[:-1])[len(prompt) - 1:].astype(np.float64)
    m = logits.max(axis=1, keepdims=True)
    return prompt, logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("device", ["webgpu", "cpu"])
def test_tiny_qwen2_5_calls_tools_and_reads_their_results(widget_host, device):
    folder, weights, config = _folder(device)

    async def go():
        chat = Chat(model=str(folder), device=device)
        await chat.ready(timeout=600)
        client = chat.openai
        out = {"backend": chat.backend}
        # first, while the CPU engine's KV cache is empty: every prompt token is prefilled and counted
        out["result"] = await client.chat.completions.create(
            model="qwen", messages=ROUND_TRIP, tools=TOOLS, temperature=0, max_tokens=3, logprobs=True)
        out["required"] = await client.chat.completions.create(
            model="qwen", messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
            temperature=0, max_tokens=80)
        out["named"] = await client.chat.completions.create(
            model="qwen", messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "clock"}},
            temperature=1.0, seed=3, max_tokens=80)
        out["auto"] = await client.chat.completions.create(
            model="qwen", messages=ASK, tools=TOOLS, temperature=0, max_tokens=8)
        if device == "cpu":  # deltas are cut in the kernel, alike for both engines: once is enough
            stream = await client.chat.completions.create(
                model="qwen", messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
                temperature=0, max_tokens=80, stream=True)
            out["chunks"] = [c async for c in stream]
            out["parsed"] = await client.chat.completions.parse(
                model="qwen", messages=ASK, tools=[WEATHER_STRICT], tool_choice="required", parallel_tool_calls=False,
                temperature=0, max_tokens=80)
            out["tools_and_format"] = await client.chat.completions.create(
                model="qwen", messages=ASK, tools=TOOLS, temperature=0, max_tokens=80,
                response_format={"type": "json_schema", "json_schema": {"name": "ok", "schema": OK_SCHEMA}})
        return out

    out = widget_host.run(go(), timeout=900)
    assert out["backend"]["device"] == device, out["backend"]

    # the tool's result, read as the template writes it: same prompt, same log-probabilities as the reference
    r = out["result"]
    content = r.choices[0].logprobs.content
    prompt, want = _reference_logprobs(folder, weights, config, [t.token_id for t in content])
    assert r.usage.prompt_tokens == len(prompt), (r.usage, len(prompt))
    got = np.array([t.logprob for t in content])
    err = np.abs(got - want[np.arange(len(content)), [t.token_id for t in content]])
    print(f"{device}: tool result prompt {len(prompt)} tokens, max |logprob - reference| {err.max():.2e}")
    assert err.max() < TOL, (got, err)

    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for key, names in (("required", {"weather", "clock"}), ("named", {"clock"})):
        c = out[key].choices[0]
        assert c.finish_reason == "tool_calls", (key, c)
        assert len(c.message.tool_calls) == 1 and c.message.content is None, (key, c.message)
        call = c.message.tool_calls[0]
        assert call.type == "function" and call.id.startswith("call_") and call.function.name in names
        args = json.loads(call.function.arguments)
        jsonschema.validate(args, schemas[call.function.name])
        print(f"{device} {key}: {call.function.name}({call.function.arguments}), {out[key].usage.completion_tokens} "
              f"tokens, grammar {out[key].timings}")

    # "auto": the model may write text; the grammar that would hold a call it opens ran all the same
    auto = out["auto"].choices[0]
    assert auto.finish_reason in ("stop", "length", "tool_calls"), auto
    for call in auto.message.tool_calls or []:
        jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
    assert out["auto"].timings.get("grammar_per_token_s") is not None, out["auto"].timings

    if device != "cpu":
        return
    # parse(): the call's arguments read for a strict tool, as openai's parse() gives them
    p = out["parsed"].choices[0]
    assert p.finish_reason == "tool_calls", p
    fn = p.message.tool_calls[0].function
    assert fn.parsed_arguments == json.loads(fn.arguments), fn
    jsonschema.validate(fn.parsed_arguments, WEATHER["function"]["parameters"])
    # tools with response_format: one call, or JSON valid for the format (the grammar admits nothing else)
    tf = out["tools_and_format"].choices[0]
    print(f"cpu tools + response_format: {tf.finish_reason} {tf.message.content!r} {tf.message.tool_calls}; "
          f"the two answers took {out['parsed'].timings['e2e_latency_s']:.2f} + "
          f"{out['tools_and_format'].timings['e2e_latency_s']:.2f} s")
    assert tf.finish_reason in ("tool_calls", "stop"), tf
    if tf.finish_reason == "tool_calls":
        assert len(tf.message.tool_calls) == 1, tf.message
        call = tf.message.tool_calls[0]
        jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
    else:
        jsonschema.validate(json.loads(tf.message.content), OK_SCHEMA)

    # streamed: the same call as deltas (ids differ: each answer gets its own), then finish_reason tool_calls
    chunks = out["chunks"]
    deltas = [t for ch in chunks for t in (ch.choices[0].delta.tool_calls or []) if ch.choices]
    want_call = out["required"].choices[0].message.tool_calls[0].function
    assert [(d.index, d.function.name, d.function.arguments) for d in deltas] == [(0, want_call.name, want_call.arguments)]
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == ""
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
