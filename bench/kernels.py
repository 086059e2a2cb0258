"""Benchmark: GPU time of each kernel in one decode step of a model folder, and the adapter's bound beside it.

In headless WebGPU Chromium the page loads the folder's ``model.wasm`` and weights with tvmjs (web-llm's
ABI: ``embed``, ``prefill``, ``decode``, paged KV cache), prefills ``--prompt`` tokens, then times decode
steps, each followed by web-llm's greedy sampling chain on the GPU (``softmax_with_temperature`` ->
``argsort_probs`` -> ``sample_with_top_p``, the id copied back), as one decode token costs under web-llm:
the whole step by wall clock (to ``onSubmittedWorkDone``), and every compute pass by timestamp
queries when the adapter offers ``timestamp-query`` (else only the step). The same page measures the
adapter's read bandwidth and FMA throughput with two small shaders; with the model's FLOPs and weight
bytes per token they give the step's lower bound.

    python bench/kernels.py [--model FOLDER] [--steps 8] [--prompt 16] [--quant ggml] [--schedule fallback]

Writes ``kernels.json``: kernels sorted by time (median ms per step, calls, share), step time, bound.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH, BUILD, esbuild, write_result  # noqa: E402
from webllm_widget._aio import run as run_async  # asyncio.run fails under Playwright's sync API

PAGE = b"""<!doctype html><meta charset="utf-8"><title>kernel bench</title>
<script type="module">import "/kernels_page.js"; window.benchReady = true;</script>"""


def model_work(folder: Path) -> dict:
    """FLOPs and weight bytes one decode token needs: 2 FLOPs per matrix weight; every weight read once."""
    cfg = json.loads((folder / "mlc-chat-config.json").read_text())
    m = cfg["model_config"]
    h, f, L = m["hidden_size"], m["intermediate_size"], m["num_hidden_layers"]
    d = m.get("head_dim") or h // m["num_attention_heads"]
    qkv = h * d * (m["num_attention_heads"] + 2 * m["num_key_value_heads"])
    per_layer = qkv + m["num_attention_heads"] * d * h + 2 * h * f + f * h
    weights = L * per_layer + m["vocab_size"] * h  # the LM head (tied or not) is a matrix-vector product too
    tc = json.loads((folder / "tensor-cache.json").read_text())
    param_bytes = sum(s["nbytes"] for s in tc["records"])
    return {"matrix_weights": weights, "flops_per_token": 2 * weights, "param_bytes": param_bytes}


async def _run(folder: Path, prompt: int, steps: int) -> dict:
    from webllm_widget.browser import PageServer, launch_webgpu

    files = {p.name: p for p in folder.iterdir() if p.is_file()}
    js = BUILD / "kernels_page.js"

    def route(path: str):
        if path in ("/", "/index.html"):
            return PAGE, "text/html"
        if path == "/kernels_page.js":
            return js, "text/javascript"
        if path.startswith("/m/") and path[3:] in files:
            return files[path[3:]], "application/octet-stream"
        return None

    with PageServer(route) as server:
        async with launch_webgpu(server) as browser:
            page = browser.context.pages[0]
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            await page.goto(f"{server.origin}/")
            await page.wait_for_function("() => window.benchReady && window.benchKernels", timeout=60000)
            t = time.perf_counter()
            out = await page.evaluate("(o) => benchKernels.run(o)", {"base": "/m/", "promptLen": prompt, "steps": steps})
            out["page_s"] = time.perf_counter() - t
            out["adapter"] = browser.adapter
            out["console_errors"] = [c for c in console if c.startswith("error")][:10]
    return out


def analyse(raw: dict, work: dict) -> dict:
    step_ms = statistics.median(raw["wall_ms"])
    res: dict = {"step_wall_ms": {"median": step_ms, "runs": raw["wall_ms"]},
                 "decode_tok_s_from_step": 1e3 / step_ms, "timestamps": raw["timestamps"]}
    if raw["passes"]:
        per_step = []
        for passes in raw["passes"]:
            agg: dict = defaultdict(lambda: [0.0, 0])
            for p in passes:
                agg[p["name"]][0] += p["ns"] / 1e6
                agg[p["name"]][1] += 1
            per_step.append(agg)
        names = set().union(*per_step)
        # Means over steps (not medians) so the kernels' shares add up to the whole step.
        gpu_ms = statistics.fmean(sum(v[0] for v in agg.values()) for agg in per_step)
        kernels = []
        for n in names:
            ms = statistics.fmean(agg.get(n, [0.0, 0])[0] for agg in per_step)
            kernels.append({"kernel": n, "ms": ms, "calls": per_step[0].get(n, [0, 0])[1],
                            "share": ms / gpu_ms if gpu_ms else None})
        kernels.sort(key=lambda k: -k["ms"])
        res.update({"gpu_ms_per_step": gpu_ms, "dispatches_per_step": len(raw["passes"][0]), "kernels": kernels,
                    "method": "timestamp-query around every compute pass"})
    else:
        res["method"] = "wall clock of the whole step (adapter has no timestamp-query)"
    peaks = raw["peaks"]
    t_flops = work["flops_per_token"] / (peaks["fma_GFLOPs"] * 1e9)
    t_bytes = work["param_bytes"] / (peaks["read_GBps"] * 1e9)
    bound_ms = max(t_flops, t_bytes) * 1e3
    res["bound"] = {**peaks, **work, "compute_ms": t_flops * 1e3, "memory_ms": t_bytes * 1e3, "step_ms": bound_ms,
                    "tok_s": 1e3 / bound_ms, "fraction_of_bound": bound_ms / step_ms,
                    "note": "peaks from two small shaders on the same device: vec4 read bandwidth; register FMA chains"}
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a web-llm model folder (default: the built-in SmolLM2 in --quant mode)")
    ap.add_argument("--quant", default="ggml")
    ap.add_argument("--schedule", default="fallback")
    ap.add_argument("--prompt", type=int, default=16, help="tokens prefilled before the timed decode steps")
    ap.add_argument("--steps", type=int, default=8, help="timed decode steps (median); a shared machine needs several")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.model:
        folder = Path(args.model)
    else:
        from webllm_widget import models

        folder = models.default(quantization=None if args.quant == "ggml" else args.quant, schedule=args.schedule)
    esbuild(BENCH / "js" / "kernels_page.ts", BUILD / "kernels_page.js")
    raw = run_async(_run(folder, args.prompt, args.steps))
    res = analyse(raw, model_work(folder))
    res.update({"folder": folder.name, "quantization": raw["meta"]["quantization"], "adapter": raw["adapter"],
                "settings": {"prompt": args.prompt, "steps": args.steps, "schedule": args.schedule},
                "console_errors": raw["console_errors"], "gpu_errors": raw.get("errors", [])})
    path = write_result("kernels", res, args.out)
    print(f"decode step {res['step_wall_ms']['median']:.1f} ms ({res['decode_tok_s_from_step']:.2f} tok/s); "
          f"bound {res['bound']['step_ms']:.1f} ms ({res['bound']['fraction_of_bound']:.1%} of it reached)")
    for k in res.get("kernels", [])[:8]:
        print(f"  {k['share'] or 0:6.1%} {k['ms']:8.2f} ms  x{k['calls']:<3d} {k['kernel']}")
    print(f"-> {path}")
    return res


if __name__ == "__main__":
    main()
