"""OpenAI options of ``Chat.complete`` on both engines, with the tiny random Llama (seed 0) in a real page.

``logprobs`` are checked against the numpy reference (tests/helpers/reference.py) run on the same 4-bit weights
(dequantized) for the same tokens: the model's log-softmax, before temperature and logit_bias; the answers after the
first find their prompt in the KV cache (``prompt_tokens_details.cached_tokens``) and still match it. ``logit_bias``
-100 on the greedy first token makes the reference's second choice come first; ``n=3`` with a seed repeats and
its first choice is the ``n=1`` answer of that seed; streamed chunks concatenate to the answer asked without
streaming; JSON mode's mask holds on both engines (xgrammar: inside web-llm on WebGPU, npm web-xgrammar on the CPU).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from reference import LlamaReference
from tiny import TinyLlama
from webllm_widget import Chat
from webllm_widget.compile.chat_config import render_prompt
from webllm_widget.compile.quant.packing import dequantize, quantize_q4

pytestmark = pytest.mark.browser

MSGS = [{"role": "user", "content": "the capital of France"}]
#: |logprob - reference| allowed: the 4-bit kernels match the dequantized reference's logits within 1e-2
#: (test_model_webgpu), and a log-softmax moves by at most twice a uniform logit error.
TOL = 2.5e-2


def _prompt_ids(folder) -> list[int]:
    from tokenizers import Tokenizer

    conv = json.loads((folder / "mlc-chat-config.json").read_text())["conv_template"]
    text = render_prompt(conv, [("user", MSGS[0]["content"]), ("assistant", None)])
    return Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text, add_special_tokens=False).ids


def _reference_logprobs(prompt: list[int], forced: list[int]) -> np.ndarray:
    """log-softmax of the reference's logits after ``prompt`` and after each of ``forced[:-1]``: (len(forced), vocab)."""
    tiny = TinyLlama.make(seed=0)
    deq = {k: (dequantize("q4", quantize_q4(v)) if v.ndim == 2 else v) for k, v in tiny.weights.items()}
    ref = LlamaReference(deq, tiny.config)
    logits = ref.forward(prompt + forced[:-1])[len(prompt) - 1:].astype(np.float64)
    m = logits.max(axis=1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))


def _text(c: dict, i: int = 0) -> str:
    return c["choices"][i]["message"]["content"]


async def _openai_code(client) -> dict:
    """Code as written for ``openai.AsyncOpenAI()``: only ``client`` differs."""
    reply = await client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, temperature=0, max_tokens=6)
    stream = await client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, temperature=0, max_tokens=6,
                                                  stream=True)
    streamed = ""
    async for chunk in stream:
        if chunk.choices:
            streamed += chunk.choices[0].delta.content or ""
    return {"reply": reply, "streamed": streamed}


def _run_options(host, folder, device: str) -> dict:
    async def go():
        chat = Chat(model=str(folder), device=device)
        await chat.ready(timeout=900)
        out = {"backend": chat.backend}
        out["lp"] = await chat.complete(MSGS, temperature=1.0, seed=7, max_tokens=6, logprobs=True, top_logprobs=3)
        out["greedy"] = await chat.complete(MSGS, temperature=0, max_tokens=6, logprobs=True)
        first = out["greedy"]["choices"][0]["logprobs"]["content"][0]["token_id"]
        out["biased"] = await chat.complete(MSGS, temperature=0, max_tokens=2, logprobs=True, logit_bias={first: -100})
        out["n3"] = [await chat.complete(MSGS, n=3, seed=5, temperature=2.0, max_tokens=5) for _ in range(2)]
        out["n1"] = await chat.complete(MSGS, seed=5, temperature=2.0, max_tokens=5)
        stream = await chat.complete(MSGS, temperature=0, max_tokens=6, stream=True, stream_options={"include_usage": True})
        out["chunks"] = [c async for c in stream]
        if device == "webgpu":
            out["client"] = await _openai_code(chat.openai)
        out["json"] = await chat.complete(MSGS, max_tokens=4, response_format={"type": "json_object"})
        if device == "webgpu":
            chat.show_token_probs = True  # the widget shows the next answer's tokens by probability
            h = chat.send("hello", temperature=0, max_tokens=5)
            await h
            out["shown"] = h.result
        return out

    return host.run(go())


def _check_options(out: dict, folder, device: str) -> None:
    assert out["backend"]["device"] == device, out["backend"]
    prompt = _prompt_ids(folder)

    # logprobs: the tokens drawn (temperature 1, seed 7) with their log-probabilities and top 3, against numpy
    lp = out["lp"]
    assert lp["usage"]["prompt_tokens"] == len(prompt), (lp["usage"], len(prompt))
    content = lp["choices"][0]["logprobs"]["content"]
    ids = [t["token_id"] for t in content]
    assert len(ids) == lp["usage"]["completion_tokens"] and ids, lp
    want = _reference_logprobs(prompt, ids)
    got = np.array([t["logprob"] for t in content])
    err = np.abs(got - want[np.arange(len(ids)), ids])
    print(f"{device}: max |logprob - reference| {err.max():.2e} over {len(ids)} tokens")
    assert err.max() < TOL, (got, want[np.arange(len(ids)), ids])
    for step, t in enumerate(content):
        assert len(t["top_logprobs"]) == 3
        top_ref = np.sort(want[step])[::-1][:3]
        np.testing.assert_allclose([a["logprob"] for a in t["top_logprobs"]], top_ref, atol=TOL)
        assert t["top_logprobs"][0]["logprob"] >= t["logprob"] - TOL
    joined = "".join(t["token"] for t in content)
    # the tiny model's byte tokens may not form UTF-8 (each then decodes to U+FFFD): compare whole answers only
    assert joined == _text(lp) or "\ufffd" in joined, (joined, _text(lp))

    # prompt caching: the first answer found nothing in the KV cache; the next ones, asked with the same messages,
    # find the whole prompt there but its last token (which runs again for the logits), and their log-probabilities
    # below still match the reference's
    assert lp["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}, lp["usage"]
    for later in (out["greedy"], out["biased"]):
        assert later["usage"]["prompt_tokens"] == len(prompt), later["usage"]
        assert later["usage"]["prompt_tokens_details"] == {"cached_tokens": len(prompt) - 1}, later["usage"]

    # logit_bias -100 on the greedy first token: the reference's runner-up comes first instead
    first = out["greedy"]["choices"][0]["logprobs"]["content"][0]["token_id"]
    ref0 = _reference_logprobs(prompt, [first])[0]
    ranked = np.argsort(-ref0)
    assert first == int(ranked[0]), (first, ranked[:3])
    b = out["biased"]["choices"][0]["logprobs"]["content"]
    assert b[0]["token_id"] != first and b[0]["token_id"] == int(ranked[1]), (b[0], ranked[:3])
    # the logprob reported is the model's own (before the bias): the runner-up's
    assert abs(b[0]["logprob"] - ref0[ranked[1]]) < TOL

    # n=3 with a seed: three answers, the same twice, the first one the n=1 answer of that seed
    r1, r2 = out["n3"]
    assert [c["index"] for c in r1["choices"]] == [0, 1, 2]
    assert [_text(r1, i) for i in range(3)] == [_text(r2, i) for i in range(3)]
    assert _text(r1, 0) == _text(out["n1"])
    assert len({_text(r1, i) for i in range(3)}) > 1, [_text(r1, i) for i in range(3)]
    assert r1["usage"] == r2["usage"] and r1["usage"]["completion_tokens"] > 0

    # streaming: role chunk, text chunks, finish chunk, usage chunk; the text is the non-streamed greedy answer
    chunks = out["chunks"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == _text(out["greedy"])
    assert chunks[-2]["choices"][0]["finish_reason"] == out["greedy"]["choices"][0]["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == out["greedy"]["usage"]
    assert len({c["id"] for c in chunks}) == 1 and all(c["object"] == "chat.completion.chunk" for c in chunks)

    # JSON mode: the grammar's mask holds even for random weights (the answer opens an object; 4 tokens rarely close
    # it: whole answers are checked with SmolLM2 in test_structured_output)
    assert _text(out["json"]).lstrip().startswith("{"), _text(out["json"])

    # the OpenAI types accept every shape
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    for c in (lp, out["greedy"], out["biased"], *out["n3"], out["n1"]):
        ChatCompletion.model_validate(c)
    for c in chunks:
        ChatCompletionChunk.model_validate(c)


def test_openai_options_on_webgpu_match_the_reference(widget_host, tiny_folder):
    out = _run_options(widget_host, tiny_folder, "webgpu")
    _check_options(out, tiny_folder, "webgpu")
    # the drop-in client: openai's own types, the same answers as complete()
    from openai.types.chat import ChatCompletion

    reply = out["client"]["reply"]
    assert isinstance(reply, ChatCompletion) and reply.model == out["greedy"]["model"]
    assert reply.choices[0].message.content == out["client"]["streamed"] == _text(out["greedy"])
    assert reply.usage.completion_tokens == out["greedy"]["usage"]["completion_tokens"]

    # the token probabilities view: one span per token, coloured by its probability, alternatives on hover, as text
    toks = out["shown"]["choices"][0]["logprobs"]["content"]
    assert len(toks[0]["top_logprobs"]) == 5
    view = widget_host.page.evaluate("""() => {
        const root = document.querySelector('.wlw-token-probs');
        return {hidden: root.hidden, spans: [...root.querySelectorAll('.wlw-tok')].map(s => ({
            text: s.textContent, p: Number(s.dataset.p), title: s.title, children: s.children.length,
            bg: s.style.background}))};
    }""")
    assert not view["hidden"] and len(view["spans"]) == len(toks), (view, toks)
    for span, t in zip(view["spans"], toks):
        assert abs(span["p"] - np.exp(t["logprob"])) < 1e-3 and span["children"] == 0
        assert all(json.dumps(a["token"], ensure_ascii=False) in span["title"] for a in t["top_logprobs"]), span["title"]
    assert len({s["bg"] for s in view["spans"]}) >= 1 and all(s["bg"].startswith("hsl") or "rgb" in s["bg"] for s in view["spans"])


def test_openai_options_on_the_cpu_engine_match_the_reference(widget_host, tiny_folder):
    out = _run_options(widget_host, tiny_folder, "cpu")
    _check_options(out, tiny_folder, "cpu")
