"""SmolLM2-135M (the built-in model, lossless GGUF weights) on the page's CPU, in Chromium without WebGPU.

Slow: builds the CPU folder once (cached), loads ~100 MB of weights into the page.
"""
from __future__ import annotations

import numpy as np
import pytest

from cpu_page import serve_cpu_model, teacher_forced
from reference import LlamaReference, check_integer_activation_logits, load_weights
from webllm_widget import Chat

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PROMPT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
          "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def smollm2_cpu():
    from webllm_widget import models

    return models.default_gguf(progress=False), models.default(device="cpu", progress=False)


@pytest.mark.parametrize("isa", ["simd128", "relaxed-simd"])
def test_smollm2_teacher_forced_logits_on_the_cpu_match_the_numpy_reference(host_server, chromium_no_webgpu,
                                                                             smollm2_cpu, isa):
    from tokenizers import Tokenizer

    from webllm_widget.compile.checkpoint import open_checkpoint
    from webllm_widget.compile.cpu import LIBRARY_FILES

    gguf, folder = smollm2_cpu
    ids = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(PROMPT).ids
    forced = [504, 3575, 282, 4649, 314]  # "The capital of France is" in SmolLM2's vocabulary
    page = chromium_no_webgpu.new_page()
    try:
        page.goto(host_server.origin + "/blank.html")
        out = teacher_forced(page, serve_cpu_model(host_server, f"smollm2-{isa}", folder / LIBRARY_FILES[isa], folder),
                             ids, forced, tag="smollm2")
    finally:
        page.close()
    ckpt = open_checkpoint(gguf)
    weights = load_weights(ckpt)
    # 16-bit activation blocks, but value + residue bytes into the relaxed build's byte dot products (Q4_1 layers)
    bits = {"*": "int8x2", "lm_head": 16} if isa == "relaxed-simd" else 16
    blocks = LlamaReference(weights, ckpt.config, activations=bits).forward(ids + forced)[len(ids) - 1:]
    exact = LlamaReference(weights, ckpt.config).forward(ids + forced)[len(ids) - 1:]
    got = out["logits"]
    assert got.shape == exact.shape
    check_integer_activation_logits(got, blocks, exact)
    # and the tokens a greedy answer picks are the float reference's
    np.testing.assert_array_equal(got.argmax(-1), exact.argmax(-1))


def test_chat_without_webgpu_answers_paris_on_the_cpu(widget_host_no_webgpu, smollm2_cpu):
    async def go():
        chat = Chat(temperature=0, max_tokens=24)  # device="auto", the built-in model
        await chat.ready(timeout=1200)
        return chat, await chat.ask("What is the capital of France?")

    chat, answer = widget_host_no_webgpu.run(go(), timeout=1800)
    # Chromium has relaxed SIMD, but the page runs the build measured faster (js/src/engine/cpu/features.ts)
    assert chat.backend["device"] == "cpu" and chat.backend["cpu_build"] == "simd128", chat.backend
    assert "Paris" in answer, answer
    # the greedy answer is the float numpy reference's, token for token (8-bit activations change no choice here)
    from tokenizers import Tokenizer

    from webllm_widget.compile.checkpoint import open_checkpoint

    gguf, folder = smollm2_cpu
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ckpt = open_checkpoint(gguf)
    ref = LlamaReference(load_weights(ckpt), ckpt.config).greedy(tok.encode(PROMPT).ids, 24, stop=[2])
    assert answer == tok.decode(ref), (answer, tok.decode(ref))
