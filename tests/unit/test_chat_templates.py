"""The conversation template written into ``mlc-chat-config.json`` renders, token for token, what the checkpoint's
own Jinja ``chat_template`` renders (``jinja2``), for a multi-turn conversation with a system message.

The page's ids are computed by web-llm 0.2.85's own code in Node (``tests/helpers/js/webllm_prompt_ids.mjs``): its
``Conversation`` built from the chat completion request as the engine builds it (one piece per turn), each piece
encoded on its own by ``@mlc-ai/web-tokenizers`` after ``system_prefix_token_ids`` (the BOS), as the engine's
``getInputData`` does. They are compared with the Jinja text encoded at once by HF ``tokenizers``, so a piece
boundary that splits a token, a missing BOS, separator or default system prompt all fail; the project's Python
mirror of those rules (``chat_config.prompt_pieces``) is checked against web-llm's pieces too. The templates are the
families' published ones (Llama 3 Instruct, Qwen2.5 Instruct with its tools branch, Gemma 3 (no system role: the
system text opens the first user turn), Phi-3/3.5-mini).
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tiny import tiny_tokenizer_json
from webllm_widget.compile.chat_config import conv_template_from_jinja, prompt_pieces

jinja2 = pytest.importorskip("jinja2")
tokenizers = pytest.importorskip("tokenizers")

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
QWEN25 = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\n<tools>\" }}\n    {%- for tool in tools %}{{- \"\\n\" }}{{- tool | tojson }}"
    "{%- endfor %}\n    {{- \"\\n</tools><|im_end|>\\n\" }}\n{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n")
GEMMA3 = (
    "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n    {%- set first_user_prefix = "
    "messages[0]['content'] + '\n\n' -%}\n    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n    {%- set loop_messages = messages -%}\n{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n    {%- if (message['role'] == 'assistant') -%}\n        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n        {%- set role = message['role'] -%}\n    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n        {{ message['content'] | trim }}\n"
    "    {%- else -%}\n        {{ raise_exception(\"Invalid content type\") }}\n    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n    {{'<start_of_turn>model\n'}}\n{%- endif -%}\n")
#: Gemma 2's template: no system role (a system message raises), assistant turns written as "model".
GEMMA2 = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")
PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
    "{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}")

FAMILIES = {
    "llama-3": (LLAMA3, ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                         "<|eot_id|>"], "<|begin_of_text|>", "<|eot_id|>"),
    "qwen2.5": (QWEN25, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "", "<|im_end|>"),
    "gemma": (GEMMA3, ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"], "<bos>", "<end_of_turn>"),
    "phi-3": (PHI3, ["<s>", "</s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], "<s>",
              "<|end|>"),
}

CONVERSATION = [("system", "You answer in one word."), ("user", "What is the capital of France?"),
                ("assistant", "Paris."), ("user", "And the capital of Italy?")]


MODULES = Path(__file__).resolve().parents[2] / "js" / "node_modules"
SCRIPT = Path(__file__).resolve().parents[1] / "helpers" / "js" / "webllm_prompt_ids.mjs"


def _webllm_prompt(conv: dict, doc: dict, messages: list[dict], tmp_path: Path) -> dict:
    node = shutil.which("node")
    assert node, "node is needed (it runs web-llm's own Conversation and tokenizer)"
    (tmp_path / "mlc-chat-config.json").write_text(json.dumps({"conv_template": conv}))
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
    (tmp_path / "messages.json").write_text(json.dumps(messages))
    r = subprocess.run([node, str(SCRIPT), str(MODULES), str(tmp_path / "mlc-chat-config.json"),
                        str(tmp_path / "tokenizer.json"), str(tmp_path / "messages.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def _tokenizer(specials: list[str]):
    """The tiny byte-level BPE with the family's special tokens added (ids after the tiny vocabulary)."""
    doc = tiny_tokenizer_json()
    n = len(doc["model"]["vocab"])
    for i, t in enumerate(specials):
        if t not in doc["model"]["vocab"]:
            doc["added_tokens"].append({"id": n + i, "content": t, "single_word": False, "lstrip": False,
                                        "rstrip": False, "normalized": False, "special": True})
            doc["model"]["vocab"][t] = n + i
    tok = tokenizers.Tokenizer.from_str(json.dumps(doc))
    return tok, {t["content"]: t["id"] for t in doc["added_tokens"]}, doc


@pytest.mark.parametrize("family", list(FAMILIES))
def test_page_prompt_ids_equal_the_jinja_template_ids(family, tmp_path):
    template, specials, bos, stop = FAMILIES[family]
    tok, ids, doc = _tokenizer(specials)
    conv = conv_template_from_jinja(template, ids)
    assert conv["name"] == family.split(".")[0].replace("qwen2", "chatml")
    assert conv["stop_str"] == [stop] and ids[stop] in conv["stop_token_ids"]

    messages = [{"role": r, "content": c} for r, c in CONVERSATION]
    page = _webllm_prompt(conv, doc, messages, tmp_path)
    system, turns = CONVERSATION[0][1], CONVERSATION[1:]
    assert page["pieces"] == prompt_pieces(conv, turns + [("assistant", None)], system=system)

    text = jinja2.Environment().from_string(template).render(
        messages=messages, add_generation_prompt=True, bos_token=bos, eos_token="</s>")
    want = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(page["ids"], skip_special_tokens=False) == text
    assert page["ids"] == want


def test_qwen2_5_default_system_prompt_is_carried_when_there_is_none():
    tok, ids, _ = _tokenizer(FAMILIES["qwen2.5"][1])
    conv = conv_template_from_jinja(QWEN25, ids)
    assert conv["system_message"] == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    turns = CONVERSATION[1:]
    text = jinja2.Environment().from_string(QWEN25).render(
        messages=[{"role": r, "content": c} for r, c in turns], add_generation_prompt=True)
    assert "".join(prompt_pieces(conv, turns + [("assistant", None)])) == text


#: Tools as OpenAI requests carry them (a non-ASCII description; parameters' keys out of sorted order).
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city (°C or °F)",
                                      "parameters": {"type": "object", "properties": {
                                          "city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                                          "required": ["city"]}}},
    {"type": "function", "function": {"name": "local_time", "description": "The time in a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
]
_CALLS = [{"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                            "arguments": '{"unit": "c", "city": "Paris"}'}},
          {"id": "call_2", "type": "function", "function": {"name": "local_time", "arguments": '{"city": "Paris"}'}}]
#: (OpenAI messages, tools): a first turn with and without a system message, then a round trip of two calls and
#: their results, an answer, a new question, and a call with text before it.
TOOL_CONVERSATIONS = {
    "first-turn": ([{"role": "system", "content": "You answer briefly."},
                    {"role": "user", "content": "Weather in Paris?"}], TOOLS),
    "default-system": ([{"role": "user", "content": "Weather in Paris?"}], TOOLS[:1]),
    "results": ([{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": "Weather in Paris?"},
                 {"role": "assistant", "content": None, "tool_calls": _CALLS},
                 {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21, "sky": "clear"}'},
                 {"role": "tool", "tool_call_id": "call_2", "content": "14:05"}], TOOLS),
    "second-round": ([{"role": "user", "content": "Weather in Paris?"},
                      {"role": "assistant", "content": "Let me look.", "tool_calls": _CALLS[:1]},
                      {"role": "tool", "tool_call_id": "call_1", "content": "21 °C"},
                      {"role": "assistant", "content": "It is 21 °C."},
                      {"role": "user", "content": "And the time?"}], TOOLS),
}


@pytest.mark.parametrize("case", list(TOOL_CONVERSATIONS))
@pytest.mark.parametrize("family", ["qwen2.5", "qwen3"])
def test_page_prompt_with_tools_equals_the_template_rendered_with_tools(family, case, tmp_path):
    """Qwen2.5-Instruct's and Qwen3's own templates (tools in the system turn, <tool_call> in assistant turns,
    <tool_response> in user turns; Qwen3 without a default system text): the tool format the build reads off each,
    applied by the kernel to an OpenAI request, gives web-llm's Conversation the pieces whose ids equal the template
    rendered by Jinja with ``tools=`` (calls' arguments as objects, as transformers takes them), encoded by HF
    tokenizers."""
    from chat_templates import QWEN2_5_TOOLS, QWEN3_TOOLS, render_like_transformers

    template = {"qwen2.5": QWEN2_5_TOOLS, "qwen3": QWEN3_TOOLS}[family]

    from webllm_widget.compile.tool_calls import tool_format_from_jinja
    from webllm_widget.widgets.openai_format import request_messages
    from webllm_widget.widgets.tool_calls import tool_plan, tool_turns

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>", "<tool_response>",
                "</tool_response>"]
    tok, ids, doc = _tokenizer(specials)
    conv = conv_template_from_jinja(template, ids)
    fmt = tool_format_from_jinja(template, conv)
    assert fmt is not None and fmt["call_prefix"] == "<tool_call>\n"
    messages, tools = TOOL_CONVERSATIONS[case]
    plan = tool_plan({"tools": tools}, fmt, "tiny-qwen2.5")
    turns = tool_turns(request_messages(messages), fmt, plan, "tiny-qwen2.5")
    page = _webllm_prompt(conv, doc, turns, tmp_path)

    # as transformers takes them: arguments as objects, content a string (Qwen3's template slices every content)
    hf_messages = [dict(m, content=m["content"] or "", tool_calls=[{"type": "function", "function": {
        "name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}} for c in m["tool_calls"]])
        if m.get("tool_calls") else m for m in messages]
    text = render_like_transformers(template, hf_messages, tools)
    assert "# Tools" in text and "°C or °F" in text
    assert tok.decode(page["ids"], skip_special_tokens=False) == text
    assert page["ids"] == tok.encode(text, add_special_tokens=False).ids


def test_templates_without_tool_calls_have_no_tool_format():
    """SmolLM2's ChatML, Llama 3 and the shortened Qwen2.5 template (tools listed, but no way to write a call back)
    give no tool format, so a request with tools is refused for them."""
    from tiny import CHATML

    from webllm_widget.compile.tool_calls import tool_format_from_jinja

    for template, specials in ((CHATML, FAMILIES["qwen2.5"][1]), (LLAMA3, FAMILIES["llama-3"][1]),
                               (QWEN25, FAMILIES["qwen2.5"][1])):
        _, ids, _ = _tokenizer(specials)
        assert tool_format_from_jinja(template, conv_template_from_jinja(template, ids)) is None


def test_gemma2_without_a_system_role_page_prompt_ids_equal_the_jinja_template_ids(tmp_path):
    """Gemma 2's template refuses a system message, so the conversation has none: the page's ids (web-llm's own
    Conversation) equal jinja2's render encoded by HF tokenizers. A system message the page is given opens the first
    user turn with a blank line (both engines fold it in; ``js/test/template.test.mjs``), which the Python mirror
    of the pieces renders as Gemma 3's template would."""
    specials = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"]
    tok, ids, doc = _tokenizer(specials)
    conv = conv_template_from_jinja(GEMMA2, ids)
    assert conv["system_role"] is False and conv["system_template"] == "" and conv["stop_str"] == ["<end_of_turn>"]
    turns = CONVERSATION[1:]
    messages = [{"role": r, "content": c} for r, c in turns]
    page = _webllm_prompt(conv, doc, messages, tmp_path)
    assert page["pieces"] == prompt_pieces(conv, turns + [("assistant", None)])
    env = jinja2.Environment()
    env.globals["raise_exception"] = lambda text: (_ for _ in ()).throw(jinja2.TemplateError(text))
    text = env.from_string(GEMMA2).render(messages=messages, add_generation_prompt=True, bos_token="<bos>")
    assert tok.decode(page["ids"], skip_special_tokens=False) == text
    assert page["ids"] == tok.encode(text, add_special_tokens=False).ids
    with pytest.raises(jinja2.TemplateError, match="System role not supported"):
        env.from_string(GEMMA2).render(messages=[{"role": "system", "content": "x"}] + messages, bos_token="<bos>")
    system = CONVERSATION[0][1]
    gemma3 = jinja2.Environment().from_string(GEMMA3).render(
        messages=[{"role": "system", "content": system}] + messages, add_generation_prompt=True, bos_token="")
    assert "".join(prompt_pieces(conv, turns + [("assistant", None)], system=system)) == gemma3


def test_hermes_tool_use_template_is_refused_with_the_reason(tmp_path):
    """Hermes 3's (and Hermes 2 Pro's) ``tool_use`` template, which a checkpoint names beside its ChatML ``default``,
    writes a system turn of its own before the conversation's, each tool as a Python-like signature, and results in
    a ``tool`` turn ending without the newline of the other turns: the model's turns cannot carry it token for token,
    so the build finds the template, records why, and a request with tools raises that reason."""
    import json
    from types import SimpleNamespace

    from chat_templates import HERMES_3_TOOL_USE, QWEN2_5_TOOLS
    from tiny import CHATML

    from webllm_widget.compile.chat_config import chat_template_of, tool_use_template_of
    from webllm_widget.compile.tool_calls import tool_format_or_reason

    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": [
        {"name": "default", "template": CHATML}, {"name": "tool_use", "template": HERMES_3_TOOL_USE}]}))
    ckpt = SimpleNamespace(kind="hf", path=tmp_path)
    assert chat_template_of(ckpt) == CHATML and tool_use_template_of(ckpt) == HERMES_3_TOOL_USE
    _, ids, _ = _tokenizer(FAMILIES["qwen2.5"][1])
    conv = conv_template_from_jinja(CHATML, ids)
    fmt, why = tool_format_or_reason(HERMES_3_TOOL_USE, conv)
    assert fmt is None and "system turn of its own" in why, why
    # a template that calls no tools has no reason to give; Qwen2.5's has a format
    assert tool_format_or_reason(CHATML, conv) == (None, None)
    assert tool_format_or_reason(QWEN2_5_TOOLS, conv_template_from_jinja(QWEN2_5_TOOLS, ids))[0] is not None

    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from webllm_widget import Chat, UnsupportedParameter

    chat = Chat(model="default", autoload=False)
    chat._tool_refusals["default"] = why  # what _spec reads from the folder's mlc-chat-config.json
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    with ThreadPoolExecutor(1) as pool, pytest.raises(UnsupportedParameter, match="system turn of its own") as ei:
        pool.submit(asyncio.run, chat.complete([{"role": "user", "content": "hi"}], tools=[tool])).result()
    assert ei.value.detail == {"parameter": "tools", "model": "default", "refused": why}
