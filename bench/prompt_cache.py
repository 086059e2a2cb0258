"""Benchmark: what prompt caching (js/src/engine/prefix_cache.ts) saves on WebGPU, and what one-line JSON saves.

The built-in SmolLM2 on WebGPU (web-llm; on a software adapter such as SwiftShader the page picks the
fallback-schedule library), in headless Chromium through the engine the Chat widget uses. Two cases, each asked with
the KV cache kept between requests (the engine's default) and cleared before each (web-llm's own behaviour, set for
the answer by ``window.__webllmWidgetPromptCache = "off"``), alternating so a change in the machine's load falls on
both alike:

- ``shared_system``: a different question after the previous one, with the same system prompt (a batch of questions,
  the structured-output test's schemas): the system turn can be reused;
- ``same_prompt``: the previous request asked again (``n`` > 1, an answer regenerated): all but the last prompt
  token can be reused.

Per case and mode: time to first token, prefill speed, prompt tokens and the tokens found in the cache. Then the
answers' lengths in tokens for a few schemas with the grammar of one-line JSON the engine now uses against
xgrammar's any-whitespace JSON grammar (``response_format`` ``grammar`` with the EBNF of the latter, made by
npm ``@mlc-ai/web-xgrammar`` with web-llm's arguments), greedy.

    python bench/prompt_cache.py --runs 3

Writes ``prompt_cache.json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH, ROOT, load_builtin, write_result  # noqa: E402
from webllm_widget._aio import run as run_async  # asyncio.run fails under Playwright's sync API

SYSTEM = "You answer with JSON only."
QUESTIONS = ["What is the capital of France?", "Is the sky blue?", "In which year did World War II end?",
             "Is a whale a mammal?", "Name three colours.", "How big is an elephant?", "Give a point.",
             "Rate pizza from 1 to 10."]
#: (question, schema) for the answer lengths: nested object, array, enum, numbers
SCHEMAS = [
    ("Describe a person named Ann who is 30.", {"type": "object", "properties": {"person": {"type": "object",
     "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]}},
     "required": ["person"]}),
    ("Name three colours.", {"type": "object", "properties": {"colours": {"type": "array", "items": {"type": "string"},
                                                                        "minItems": 1, "maxItems": 3}},
                             "required": ["colours"]}),
    ("How big is an elephant?", {"type": "object", "properties": {"size": {"enum": ["small", "medium", "large"]}},
                                 "required": ["size"]}),
    ("Give a point.", {"type": "object", "properties": {"p": {"type": "object", "properties": {
        "x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]}}, "required": ["p"]}),
]


def _median(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _any_whitespace_ebnf(schema: dict) -> str:
    """xgrammar's JSON grammar for ``schema`` as web-llm 0.2.85 compiles a schema (any whitespace), as EBNF (npm
    web-xgrammar in Node: bench/js/json_ebnf.mjs)."""
    return subprocess.run(["node", str(BENCH / "js" / "json_ebnf.mjs"), json.dumps(schema)], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout


async def _run(runs: int, profile: Path) -> dict:
    from webllm_widget.headless.engine import HeadlessEngine

    out: dict = {}
    async with HeadlessEngine(profile_dir=profile) as eng:
        info, load_s = await load_builtin(eng, "webgpu")
        out.update(load_s=load_s, adapter=eng.adapter, schedule=info.get("schedule"),
                   prompt_cache=info.get("prompt_cache"))

        async def ask(question: str, mode: str, **settings) -> dict:
            await eng.page.evaluate(f"window.__webllmWidgetPromptCache = '{mode}'")
            t = time.perf_counter()
            r = await eng.generate([{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
                                   temperature=0, **settings)
            u = r["usage"]
            return {"mode": mode, "question": question, "wall_s": time.perf_counter() - t,
                    "prompt_tokens": u["prompt_tokens"], "cached_tokens": u.get("cached_tokens"),
                    "ttft_s": u.get("time_to_first_token_s"), "prefill_tok_s": u.get("prefill_tokens_per_s"),
                    "text": r["text"]}

        cases: dict[str, list] = {"shared_system": [], "same_prompt": []}
        try:
            await ask(QUESTIONS[-1], "on", max_tokens=2)  # warm: kernels compiled, grammar-free path
            for i in range(runs * 2):
                modes = ("off", "on") if i % 2 == 0 else ("on", "off")
                for j, mode in enumerate(modes):
                    q = QUESTIONS[(2 * i + j) % len(QUESTIONS)]
                    cases["shared_system"].append(await ask(q, mode, max_tokens=2))
                    cases["same_prompt"].append(await ask(q, mode, max_tokens=2))
            lengths = []
            for q, schema in SCHEMAS:
                row = {"question": q}
                for kind in ("one_line", "any_whitespace"):
                    fmt = ({"type": "json_schema", "json_schema": {"name": "a", "schema": schema}} if kind == "one_line"
                           else {"type": "grammar", "grammar": _any_whitespace_ebnf(schema)})
                    r = await eng.generate([{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
                                           temperature=0, max_tokens=60, response_format=fmt)
                    row[kind] = {"completion_tokens": r["usage"]["completion_tokens"], "text": r["text"],
                                 "finish_reason": r["finish_reason"]}
                lengths.append(row)
        finally:
            await eng.page.evaluate("window.__webllmWidgetPromptCache = undefined")
        for case, rows in cases.items():
            out[case] = {mode: {"ttft_s": _median([r["ttft_s"] for r in rows if r["mode"] == mode]),
                                "prefill_tok_s": _median([r["prefill_tok_s"] for r in rows if r["mode"] == mode]),
                                "prompt_tokens": _median([r["prompt_tokens"] for r in rows if r["mode"] == mode]),
                                "cached_tokens": _median([r["cached_tokens"] for r in rows if r["mode"] == mode])}
                         for mode in ("on", "off")}
            out[case]["runs"] = rows
        out["json_lengths"] = lengths
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-prompt-cache-") as tmp:
        result = {"system": SYSTEM, "runs": args.runs, "webgpu": run_async(_run(args.runs, Path(tmp) / "webgpu"))}
    w = result["webgpu"]
    for case in ("shared_system", "same_prompt"):
        on, off = w[case]["on"], w[case]["off"]
        print(f"{case}: time to first token {on['ttft_s']:.2f} s with the cache ({on['cached_tokens']} of "
              f"{on['prompt_tokens'] + on['cached_tokens']} prompt tokens found there) vs {off['ttft_s']:.2f} s cleared")
    one = sum(r["one_line"]["completion_tokens"] for r in w["json_lengths"])
    anyw = sum(r["any_whitespace"]["completion_tokens"] for r in w["json_lengths"])
    print(f"JSON answers: {one} tokens on one line vs {anyw} with any whitespace ({len(SCHEMAS)} schemas)")
    print(write_result("prompt_cache", result))
    return result


if __name__ == "__main__":
    main()
