"""The CPU engine behind the Chat widget, in Chromium started without WebGPU (``--enable-unsafe-webgpu`` absent).

With ``device="auto"`` (the default) the page finds no WebGPU adapter and runs the model's CPU build
(wasm32 SIMD128: the page prefers it to the relaxed-SIMD build, which measured slower, and takes it where relaxed
SIMD is missing); the widget and ``chat.backend`` say so and why. The tiny random Llama's words are
noise, so these tests check the mechanics (streaming, stop, stop strings, reset, seeds); the slow
SmolLM2 test checks an answer.
"""
from __future__ import annotations

import asyncio

import pytest

from webllm_widget import Chat

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def tiny_cpu_folder(tmp_path_factory):
    from cpu_page import tiny_cpu_folder as build

    return build(tmp_path_factory.mktemp("tiny-cpu-engine"))


def _gpu_label(host) -> str:
    return host.page.evaluate("() => document.querySelector('.wlw-chat .wlw-gpu-name').textContent")


def test_chat_without_webgpu_answers_on_the_cpu_and_says_so(widget_host_no_webgpu, tiny_cpu_folder):
    async def go():
        chat = Chat(model=str(tiny_cpu_folder), temperature=0, max_tokens=6)
        report = await chat.ready(timeout=600)
        tokens: list[str] = []
        text = await chat.send("hello", on_token=tokens.append)
        return chat, report, text, tokens

    chat, report, text, tokens = widget_host_no_webgpu.run(go())
    assert chat.device == "auto"
    assert chat.backend["device"] == "cpu" and report["device"] == "cpu"
    assert "no WebGPU adapter" in chat.backend["reason"], chat.backend
    assert tokens and "".join(tokens) == text
    assert 1 <= chat.stats["completion_tokens"] <= 6 and chat.stats["prompt_tokens"] > 5
    label = _gpu_label(widget_host_no_webgpu)
    assert label.startswith("CPU") and "no WebGPU adapter" in label
    # Chromium has relaxed SIMD, but the page runs the SIMD128 build, measured faster, and says so
    assert chat.backend["cpu_build"] == "simd128" and "SIMD128" in label, (chat.backend, label)
    assert "relaxed SIMD available, but the SIMD128 build measured faster" in chat.backend["reason"], chat.backend


#: A browser without relaxed SIMD, as the page's feature test sees it. Chromium 156 cannot be started without it
#: (V8 shipped the proposal and dropped --experimental-wasm-relaxed-simd; `--js-flags=--help` lists no such flag), so
#: WebAssembly.validate refuses any module holding i32x4.relaxed_dot_i8x16_i7x16_add_s (0xfd 0x93 0x02), as an engine
#: without the proposal does. test_cpu_library checks in Node 20's V8, which has it off, that the SIMD128 build
#: validates there and the relaxed build does not.
NO_RELAXED_SIMD = """
(() => {
  const validate = WebAssembly.validate.bind(WebAssembly);
  WebAssembly.validate = (bytes) => {
    const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes.buffer ?? bytes);
    for (let i = 0; i + 2 < b.length; i++) if (b[i] === 0xfd && b[i + 1] === 0x93 && b[i + 2] === 0x02) return false;
    return validate(bytes);
  };
})();
"""


def test_a_browser_without_relaxed_simd_gets_the_simd128_build_and_the_same_answer(widget_host_no_webgpu,
                                                                                   tiny_cpu_folder):
    """Where the page's WebAssembly refuses relaxed SIMD it still runs (the SIMD128 build) and says why."""
    msgs = [{"role": "user", "content": "the capital"}]

    async def answer():
        chat = Chat(model=str(tiny_cpu_folder), temperature=0, max_tokens=8)
        await chat.ready(timeout=600)
        return chat.backend, _text(await chat.complete(msgs))

    relaxed, relaxed_text = widget_host_no_webgpu.run(answer())
    widget_host_no_webgpu.open_page(init_script=NO_RELAXED_SIMD)
    simd, simd_text = widget_host_no_webgpu.run(answer())
    assert relaxed["cpu_build"] == "simd128" and simd["cpu_build"] == "simd128", (relaxed, simd)
    assert "measured faster" in relaxed["reason"], relaxed
    assert "no relaxed SIMD in this browser" in simd["reason"] and "SIMD128" in _gpu_label(widget_host_no_webgpu)
    assert simd_text == relaxed_text and simd_text


def _text(completion: dict) -> str:
    return completion["choices"][0]["message"]["content"]


def test_greedy_answers_repeat_and_seeded_sampling_repeats_per_seed(widget_host_no_webgpu, tiny_cpu_folder):
    msgs = [{"role": "user", "content": "the capital"}]

    async def go():
        chat = Chat(model=str(tiny_cpu_folder), max_tokens=8)
        await chat.ready(timeout=600)
        greedy = [_text(await chat.complete(msgs, temperature=0)) for _ in range(2)]
        sampled = [_text(await chat.complete(msgs, temperature=1.5, top_p=0.95, seed=s)) for s in (1, 1, 2)]
        return greedy, sampled

    greedy, (a, b, c) = widget_host_no_webgpu.run(go())
    assert greedy[0] == greedy[1] and greedy[0]
    assert a == b
    assert a != c  # another seed draws other tokens from the tiny model's flat distribution


def test_stop_mid_answer_and_stop_strings_end_the_answer(widget_host_no_webgpu, tiny_cpu_folder):
    msgs = [{"role": "user", "content": "again"}]

    async def go():
        chat = Chat(model=str(tiny_cpu_folder), temperature=0)
        await chat.ready(timeout=600)
        h = chat.send("go on", max_tokens=200)
        while len(h.tokens) < 3:
            await asyncio.sleep(0.01)
        chat.stop()
        await h
        # seeded sampling: the same tokens again up to the stop string (greedy text of the tiny model repeats one letter)
        full = _text(await chat.complete(msgs, max_tokens=12, temperature=3.0, seed=7))
        # stop at a character that first occurs after the start: the answer must end right before it
        ch = next((c for c in full[1:] if not c.isspace() and full.index(c) > 0), None)
        cut = await chat.complete(msgs, max_tokens=12, temperature=3.0, seed=7, stop=[ch]) if ch else None
        return h.result, full, ch, cut

    result, full, ch, cut = widget_host_no_webgpu.run(go())
    assert result["finish_reason"] == "abort" and 3 <= result["usage"]["completion_tokens"] < 200
    assert ch is not None, full
    assert _text(cut) == full[:full.index(ch)] and cut["choices"][0]["finish_reason"] == "stop"
