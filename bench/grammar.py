"""Benchmark: what a grammar (response_format JSON schema, xgrammar) costs per answer token, on both engines.

The built-in SmolLM2 answers the same question with the same system prompt, greedy, ``--max-tokens`` tokens, with
and without a JSON schema, alternating (so a change in the machine's load falls on both alike), ``--runs`` times
each, in headless Chromium through the engine the Chat widget uses: WebGPU (web-llm; on a software adapter such as
SwiftShader the page picks the fallback-schedule library) and the page's CPU engine (web-xgrammar). Per engine:
decode speed and seconds per token with and without the grammar, the matcher's own time per token and its
compile time (``grammar_per_token_s``, ``grammar_init_s`` from the page's usage), prefill speed and time to first
token; then the time of a few different schemas one after another (each compiled once), as
tests/browser/test_structured_output.py asks them.

    python bench/grammar.py                     # both engines
    python bench/grammar.py --devices cpu --runs 5

Writes ``grammar.json``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_builtin, write_result  # noqa: E402
from webllm_widget._aio import run as run_async  # asyncio.run fails under Playwright's sync API

SYSTEM = "You answer with JSON only."
QUESTION = "Describe a person named Ann who is 30."
SCHEMA = {"type": "object", "properties": {"person": {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]}}, "required": ["person"]}
#: A few schemas of the structured-output test's kinds: enum, number, array of enums, nested object.
SCHEMAS = [
    ("Is the sky blue?", {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"]}),
    ("What is the boiling point of water in Celsius?",
     {"type": "object", "properties": {"celsius": {"type": "number"}}, "required": ["celsius"]}),
    ("Which days are the weekend?", {"type": "object", "properties": {"days": {
        "type": "array", "minItems": 1, "maxItems": 2, "items": {"enum": ["Saturday", "Sunday", "Monday"]}}},
        "required": ["days"]}),
    ("Give a point.", {"type": "object", "properties": {"p": {"type": "object", "properties": {
        "x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]}}, "required": ["p"]}),
]


def _fmt(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def _median(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


async def _engine(device: str, runs: int, max_tokens: int, profile: Path) -> dict:
    from webllm_widget.headless.engine import HeadlessEngine

    out: dict = {"device": device}
    async with HeadlessEngine(profile_dir=profile) as eng:
        info, load_s = await load_builtin(eng, device)
        out.update(load_s=load_s, adapter=eng.adapter, schedule=info.get("schedule"),
                   engine=info.get("device"))
        # each answer prefills its whole prompt on WebGPU, as before prompt caching (bench/prompt_cache.py measures
        # that): the same prompt asked again would otherwise run one token
        await eng.page.evaluate("window.__webllmWidgetPromptCache = 'off'")
        msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
        rows: dict[str, list] = {"plain": [], "schema": []}
        for i in range(runs):
            for kind in ("plain", "schema"):
                settings = {"temperature": 0, "max_tokens": max_tokens}
                if kind == "schema":
                    settings["response_format"] = _fmt(SCHEMA)
                t = time.perf_counter()
                r = await eng.generate(msgs, **settings)
                u = r["usage"]
                rows[kind].append({"wall_s": time.perf_counter() - t, "completion_tokens": u["completion_tokens"],
                                   "prompt_tokens": u["prompt_tokens"], "decode_tok_s": u.get("decode_tokens_per_s"),
                                   "prefill_tok_s": u.get("prefill_tokens_per_s"),
                                   "ttft_s": u.get("time_to_first_token_s"),
                                   "grammar_init_s": u.get("grammar_init_s"),
                                   "grammar_per_token_s": u.get("grammar_per_token_s"), "text": r["text"]})
        for kind, rs in rows.items():
            dec = _median([r["decode_tok_s"] for r in rs])
            out[kind] = {"decode_tok_s": dec, "s_per_token": 1 / dec if dec else None,
                         "prefill_tok_s": _median([r["prefill_tok_s"] for r in rs]),
                         "ttft_s": _median([r["ttft_s"] for r in rs]), "wall_s": _median([r["wall_s"] for r in rs]),
                         "grammar_per_token_s": _median([r["grammar_per_token_s"] for r in rs]),
                         "grammar_init_s": [r["grammar_init_s"] for r in rs], "runs": rs}
        t0 = time.perf_counter()
        answers = []
        for q, schema in SCHEMAS:
            t = time.perf_counter()
            r = await eng.generate([{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
                                   temperature=0, max_tokens=40, response_format=_fmt(schema))
            u = r["usage"]
            answers.append({"wall_s": time.perf_counter() - t, "prompt_tokens": u["prompt_tokens"],
                            "completion_tokens": u["completion_tokens"], "ttft_s": u.get("time_to_first_token_s"),
                            "grammar_init_s": u.get("grammar_init_s"), "text": r["text"]})
        out["schemas"] = {"count": len(SCHEMAS), "total_s": time.perf_counter() - t0, "answers": answers}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", default="webgpu,cpu")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=24)
    args = ap.parse_args(argv)
    result: dict = {"system": SYSTEM, "question": QUESTION, "schema": SCHEMA, "max_tokens": args.max_tokens,
                    "runs": args.runs, "engines": {}}
    with tempfile.TemporaryDirectory(prefix="bench-grammar-") as tmp:
        for device in args.devices.split(","):
            result["engines"][device] = run_async(_engine(device, args.runs, args.max_tokens, Path(tmp) / device))
            e = result["engines"][device]
            print(f"{device}: load {e['load_s']:.1f} s; per token {e['plain']['s_per_token']:.3f} s plain, "
                  f"{e['schema']['s_per_token']:.3f} s with the schema (matcher {e['schema']['grammar_per_token_s']}"
                  f" s); {len(SCHEMAS)} schemas {e['schemas']['total_s']:.1f} s", flush=True)
    print(write_result("grammar", result))
    return result


if __name__ == "__main__":
    main()
