"""Several Chats with different models on one page: each answers with its own model, always.

The page's engine holds several models at once within a memory budget and swaps (visibly) past it. Tiny
random Llamas of different seeds (tests/tiny.py) answer differently to the same prompt, so an answer from
the wrong model shows. References are fresh runs: each model alone in a fresh page. One page session holds
two models, then a third past a memory budget set from Python (``Chat(memory_budget=...)``).
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


def test_two_chats_with_different_models_answer_each_with_its_own_in_any_order_and_a_third_past_the_budget_swaps(
        widget_host, tiny_seed_folders, fresh):
    fa, fb, fc = tiny_seed_folders[0], tiny_seed_folders[2], tiny_seed_folders[3]
    held_js = "async () => (await globalThis.__webllm_widget_engine__).held()"

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
        return got, ca, a, b

    got, ca, a, b = widget_host.run(go())
    held = widget_host.page.evaluate(held_js)
    assert got["a"] == [fresh[0][0], fresh[0][0], fresh[0][1], fresh[0][1]]
    assert got["b"] == [fresh[2][0], fresh[2][1], fresh[2][0]]
    assert ca["model"].startswith("tiny-llama-seed0"), ca["model"]
    # both models stay in the page (nothing was swapped: the default budget holds them)
    assert len(held["models"]) == 2 and held["used_bytes"] <= held["budget_bytes"], held
    assert a.notice == b.notice == "", (a.notice, b.notice)

    # A third model with a budget for two: loading it unloads the least recently used (B: A answered last)
    budget = int(max(m["bytes"] for m in held["models"]) * 2.5)
    statuses: dict[str, list[str]] = {"a": [], "b": []}
    a.observe(lambda c: statuses["a"].append(c["new"]), "status")
    b.observe(lambda c: statuses["b"].append(c["new"]), "status")

    async def load_third():
        c = Chat(model=str(fc), memory_budget=budget)
        await c.ready(timeout=300)
        return c

    c = widget_host.run(load_third())
    after_load = widget_host.page.evaluate(held_js)
    b_notice = b.notice

    async def third():
        out = {"c": _text(await _ask(c, PROMPTS[0]))}
        # B's model was unloaded: asking B loads it again (unloading A now), visibly, and B answers as itself
        cb = await _ask(b, PROMPTS[1])
        out["b"] = _text(cb)
        ca2 = await _ask(a, PROMPTS[0])
        out["a"] = _text(ca2)
        return out, cb, ca2

    out, cb, ca2 = widget_host.run(third())
    held = widget_host.page.evaluate(held_js)
    notices = widget_host.page.evaluate(
        "() => [...document.querySelectorAll('.wlw-notice')].filter(e => !e.hidden).map(e => e.textContent)")
    assert out == {"c": fresh[3][0], "b": fresh[2][1], "a": fresh[0][0]}, (out, fresh)
    # the swap at C's load: B unloaded, A and C held, within the budget; B's chat was told
    assert after_load["budget_bytes"] == budget, after_load
    assert sorted(m["model"][:16] for m in after_load["models"]) == ["tiny-llama-seed0", "tiny-llama-seed3"], after_load
    assert after_load["used_bytes"] <= budget, after_load
    assert "unloaded" in b_notice and "tiny-llama-seed2" in b_notice and "tiny-llama-seed3" in b_notice, b_notice
    # B's and then A's answer waited for their model to load again: status 'swapping' then 'generating'
    for k, reply in (("b", cb), ("a", ca2)):
        sts = statuses[k]
        assert "swapping" in sts and sts.index("swapping") < len(sts) - 1 - sts[::-1].index("generating"), (k, sts)
        assert sts[-1] == "ready", (k, sts)
        assert reply["model"].startswith("tiny-llama-seed" + ("2" if k == "b" else "0")), reply["model"]
    assert "again" in a.notice and "tiny-llama-seed0" in a.notice, a.notice
    # in the page too: the chats whose model was swapped show a notice
    assert sum("tiny-llama-seed" in n for n in notices) >= 2, notices
    assert len(held["models"]) == 2 and held["used_bytes"] <= budget, held
