"""Several Chats with different models on one page: each answers with its own model, always.

The page's engine holds several models at once within a memory budget and swaps (visibly) past it. Tiny
random Llamas of different seeds (tests/tiny.py) answer differently to the same prompt, so an answer from
the wrong model shows. References are fresh runs: each model alone in a fresh page.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from webllm_widget import Chat

pytestmark = pytest.mark.browser

PROMPTS = ["hello", "the capital of France"]
SEEDS = (0, 2, 3)


@pytest.fixture(scope="session")
def tiny_seed_folders() -> dict[int, Path]:
    """Tiny Llamas of seeds 0, 2 and 3 as q4f32_1 WebGPU folders (one model library, cached by content)."""
    from tiny import TinyLlama

    from webllm_widget.cache import cache_dir
    from webllm_widget.compile.pipeline import build_model_folder

    out = {}
    for seed in SEEDS:
        hf = TinyLlama.make(seed=seed).write_hf(cache_dir() / "test-sources" / f"tiny-llama-seed{seed}")
        out[seed] = build_model_folder(hf, quantization="q4f32_1", progress=False)
    return out


def _ask(chat: Chat, prompt: str):
    return chat.complete([{"role": "user", "content": prompt}], temperature=0, max_tokens=6)


def _text(c: dict) -> str:
    return c["choices"][0]["message"]["content"]


def _fresh_answers(host, folder: Path) -> list[str]:
    host.open_page()

    async def go():
        chat = Chat(model=str(folder))
        await chat.ready(timeout=300)
        return [_text(await _ask(chat, p)) for p in PROMPTS]

    return host.run(go())


@pytest.fixture
def fresh(widget_host, tiny_seed_folders) -> dict[int, list[str]]:
    ref = {seed: _fresh_answers(widget_host, folder) for seed, folder in tiny_seed_folders.items()}
    # the models differ: an answer from the wrong model would show
    assert len({tuple(v) for v in ref.values()}) == len(SEEDS), ref
    widget_host.open_page()
    return ref


def test_two_chats_with_different_models_answer_each_with_its_own_in_any_order(widget_host, tiny_seed_folders, fresh):
    fa, fb = tiny_seed_folders[0], tiny_seed_folders[2]

    async def go():
        a = Chat(model=str(fa))
        await a.ready(timeout=300)
        got = {"a": [], "b": []}
        got["a"].append(_text(await _ask(a, PROMPTS[0])))
        b = Chat(model=str(fb))
        await b.ready(timeout=300)
        got["b"].append(_text(await _ask(b, PROMPTS[0])))
        # A again after B loaded (the page's last-loaded model is B's)
        ca = await _ask(a, PROMPTS[0])
        got["a"].append(_text(ca))
        # interleaved: both asked at once, in both orders
        r1 = await asyncio.gather(_ask(a, PROMPTS[1]), _ask(b, PROMPTS[1]))
        r2 = await asyncio.gather(_ask(b, PROMPTS[0]), _ask(a, PROMPTS[1]))
        got["a"] += [_text(r1[0]), _text(r2[1])]
        got["b"] += [_text(r1[1]), _text(r2[0])]
        return got, ca

    got, ca = widget_host.run(go())
    held = widget_host.page.evaluate("async () => (await globalThis.__webllm_widget_engine__).held()")
    assert got["a"] == [fresh[0][0], fresh[0][0], fresh[0][1], fresh[0][1]]
    assert got["b"] == [fresh[2][0], fresh[2][1], fresh[2][0]]
    assert ca["model"].startswith("tiny-llama-seed0"), ca["model"]
    # both models stay in the page (nothing was swapped: the default budget holds them)
    assert len(held["models"]) == 2 and held["used_bytes"] <= held["budget_bytes"], held
