"""The built-in SmolLM2 folder, run by web-llm 0.2.85 in headless Chromium (SwiftShader WebGPU), says Paris.

Lossless GGUF weights (the file's Q4_1/Q8_0 blocks) with f32 compute; greedy sampling. At the first
step the top two logits are 0.08 apart, so this checks the whole chain (weights, q/k order, tokenizer,
chat template, kernels) at once: a small slip anywhere changes the answer. Built with the
software-adapter schedules, the right choice for SwiftShader.
"""
from __future__ import annotations

import asyncio

import pytest
from webllm_widget._aio import run as run_async  # asyncio.run fails under Playwright's sync API

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_web_llm_answers_paris_with_the_built_in_model():
    from webllm_widget import models
    from webllm_widget.headless.engine import HeadlessEngine
    from webllm_widget.models.folder import folder_model

    folder = models.default(progress=False, schedule="fallback")

    async def ask() -> dict:
        async with HeadlessEngine(fresh_profile=True) as eng:
            await eng.load(folder_model(folder))
            return await eng.generate([{"role": "user", "content": "What is the capital of France?"}],
                                      temperature=0, max_tokens=12)

    reply = run_async(ask())
    assert "Paris" in reply["text"], reply["text"]
    # the default system prompt and ChatML framing reached the model (37 tokens; 16 without the system turn)
    assert reply["usage"]["prompt_tokens"] > 30
