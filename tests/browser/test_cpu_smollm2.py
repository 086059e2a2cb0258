"""SmolLM2-135M (the built-in model, lossless GGUF weights) on the page's CPU, in Chromium without WebGPU.

Slow: builds the CPU folder once (cached), loads ~100 MB of weights into the page.
"""
from __future__ import annotations

import numpy as np
import pytest

from cpu_page import serve_cpu_model, teacher_forced
from reference import LlamaReference, load_weights
from webllm_widget import Chat

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PROMPT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
          "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def smollm2_cpu():
    from webllm_widget import models

    return models.default_gguf(progress=False), models.default(device="cpu", progress=False)


def test_smollm2_teacher_forced_logits_on_the_cpu_match_the_numpy_reference(host_server, chromium_no_webgpu,
                                                                             smollm2_cpu):
    from tokenizers import Tokenizer

    from webllm_widget.compile.checkpoint import open_checkpoint

    gguf, folder = smollm2_cpu
    ids = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(PROMPT).ids
    forced = [504, 3575, 282, 4649, 314]  # "The capital of France is" in SmolLM2's vocabulary
    page = chromium_no_webgpu.new_page()
    try:
        page.goto(host_server.origin + "/blank.html")
        out = teacher_forced(page, serve_cpu_model(host_server, "smollm2", folder / "model.wasm", folder),
                             ids, forced, tag="smollm2")
    finally:
        page.close()
    ckpt = open_checkpoint(gguf)
    want = LlamaReference(load_weights(ckpt), ckpt.config).forward(ids + forced)[len(ids) - 1:]
    got = out["logits"]
    assert got.shape == want.shape
    # The model compiler's float32 tolerance (1e-3 absolute on logits); measured here 5e-5 on logits up to ~32.
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)
    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))


def test_chat_without_webgpu_answers_paris_on_the_cpu(widget_host_no_webgpu, smollm2_cpu):
    async def go():
        chat = Chat(temperature=0, max_tokens=24)  # device="auto", the built-in model
        await chat.ready(timeout=1200)
        return chat, await chat.ask("What is the capital of France?")

    chat, answer = widget_host_no_webgpu.run(go(), timeout=1800)
    assert chat.backend["device"] == "cpu", chat.backend
    assert "Paris" in answer, answer
