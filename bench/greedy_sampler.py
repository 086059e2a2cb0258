"""Benchmark: greedy decoding through ``argmax_logits`` against the sampling kernels, same page, interleaved.

The engine's decode loop (js/src/engine/async_decode.ts) takes the library's ``argmax_logits`` for a greedy answer
(temperature 0); any higher temperature runs the softmax, the vocabulary-wide "top-first" argsort and the top-p
walk. Here the built-in model (``Chat(device="webgpu")``'s build; the page picks its library for the adapter, the
software one on SwiftShader) answers the same prompt at temperature 0 and at 2e-6 (one step above web-llm's floor,
so the sampling kernels run on a distribution that is one-hot in practice) in alternation, ``--rounds`` times,
KV cache reset before each, fixed length (``ignore_eos``). Decode tok/s as the engine reports them (median, min,
max), the decode loop each answer took, and whether both gave the same text.

    python bench/greedy_sampler.py [--prompt 32 --max-tokens 8 --rounds 4]   # -> bench/results/greedy_sampler.json
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, load_builtin, write_result  # noqa: E402
from decode import Prompts  # noqa: E402
from webllm_widget._aio import run as run_async  # noqa: E402

#: temperature 0 takes argmax_logits; this one, just above web-llm's floor of 1e-6, the sampling kernels
SAMPLED = 2e-6


async def _run(args) -> dict:
    from webllm_widget import models
    from webllm_widget.headless.engine import HeadlessEngine

    folder = models.default()
    pr = Prompts(folder)
    content = pr.text(max(1, args.prompt - pr.template_tokens(folder)))
    rows: dict = {"argmax": [], "sampling": []}
    async with HeadlessEngine() as eng:
        info, load_s = await load_builtin(eng, "webgpu")
        for _ in range(args.rounds):
            for name, t in (("argmax", 0.0), ("sampling", SAMPLED)):
                await eng.reset()
                r = await eng.generate([{"role": "user", "content": content}], max_tokens=args.max_tokens,
                                       temperature=t, ignore_eos=True)
                u = r["usage"]
                rows[name].append({"decode_tok_s": u.get("decode_tokens_per_s"), "decode_loop": u.get("decode_loop"),
                                   "completion_tokens": u.get("completion_tokens"), "text": r.get("text")})
        adapter = eng.adapter
    out = {"adapter": adapter, "schedule": info.get("schedule"), "model": info.get("model"), "load_s": load_s,
           "prompt": args.prompt, "max_tokens": args.max_tokens, "rounds": args.rounds,
           "temperatures": {"argmax": 0.0, "sampling": SAMPLED}}
    for name, rs in rows.items():
        xs = [r["decode_tok_s"] for r in rs if r["decode_tok_s"]]
        out[name] = {"decode_tok_s": {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs},
                     "decode_loop": sorted({r["decode_loop"] for r in rs}, key=str)}
    out["same_text"] = all(a["text"] == b["text"] for a, b in zip(rows["argmax"], rows["sampling"]))
    out["argmax_over_sampling"] = out["argmax"]["decode_tok_s"]["median"] / out["sampling"]["decode_tok_s"]["median"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    res = run_async(_run(args))
    path = write_result("greedy_sampler", res, args.out)
    ad = res["adapter"] or {}
    print(f"{ad.get('vendor')} {ad.get('architecture')} ({res['schedule']}): argmax {res['argmax']['decode_tok_s']['median']:.2f} tok/s "
          f"({res['argmax']['decode_loop']}), sampling kernels {res['sampling']['decode_tok_s']['median']:.2f} tok/s "
          f"({res['sampling']['decode_loop']}): x{res['argmax_over_sampling']:.2f}, same text {res['same_text']} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
