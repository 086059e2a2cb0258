"""Where the page's CPU path spends a decode step and a prefill: Chromium's sampling profiler, by wasm function.

    python bench/cpu_profile.py                      # built-in SmolLM2, both builds, prompt 128, 32 decode steps
    python bench/cpu_profile.py --shapes qwen0.5b --builds simd128 --prompt 64 --decode 16

Chromium is started without WebGPU (the CPU path), the model is loaded as ``bench/cpu.py`` loads it, and the
DevTools protocol's ``Profiler`` samples the page's thread every ``--interval-us`` while it prefills ``--prompt``
tokens (``--repeat`` times) and then decodes ``--decode`` tokens. Self time is summed per function and grouped
(:data:`GROUPS`: quantized products, LM head, attention, norms and element-wise kernels, the TVM runtime and JS).
Samples are CPU time of the page's main thread, so other work on a shared machine does not inflate them.
Prints a table and writes ``bench/results/cpu_profile.json``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from llamacpp import prompt_ids  # noqa: E402

#: Function-name patterns (first match wins) and the group each belongs to.
GROUPS = [
    (r"lm_head", "LM head (vocab x hidden product)"),
    (r"dequant_matmul|qmatmul", "quantized products (layers)"),
    (r"dequant_take", "embedding lookup"),
    (r"attention|attn|kv|rope|page|exp2f|expf|sinf|cosf|powf|__rem_pio2f|__sindf|__cosdf", "attention + KV cache + RoPE"),
    (r"rms_norm|softmax|add|multiply|silu|split|fused|concat|reshape|transpose|cast|divide|take", "element-wise / norms"),
    (r"^(wasm-function|__tvm_ffi|TVMFFI|tvm|TVM|std::|memcpy|memset|malloc|free|dlmalloc|_Z)", "TVM runtime (wasm)"),
    (r"^\(program\)|^\(garbage collector\)|^\(idle\)|^\(root\)", "browser"),
]


def group_of(name: str, url: str) -> str:
    for pat, g in GROUPS:
        if re.search(pat, name):
            return g
    if url.startswith("wasm://") or "wasm" in url:
        return "TVM runtime (wasm)"
    return "JS (tvmjs runtime, engine)"


def self_times(profile: dict) -> Counter:
    """Self time (ms) per function from a CDP Profiler.Profile."""
    by_id = {n["id"]: n for n in profile["nodes"]}
    deltas = profile.get("timeDeltas") or []
    ms = Counter()
    for sid, dt in zip(profile.get("samples") or [], deltas[1:] + [0]):
        n = by_id[sid]["callFrame"]
        ms[(n.get("functionName") or "(anonymous)", n.get("url", ""))] += dt / 1000.0
    return ms


def summarize(ms: Counter, top: int) -> dict:
    total = sum(ms.values()) or 1e-9
    groups = Counter()
    for (name, url), t in ms.items():
        groups[group_of(name, url)] += t
    return {"total_ms": round(total, 1),
            "groups": {g: {"ms": round(t, 1), "share": round(t / total, 3)} for g, t in groups.most_common()},
            "functions": [{"name": n, "group": group_of(n, u), "ms": round(t, 1), "share": round(t / total, 3)}
                          for (n, u), t in ms.most_common(top)]}


LOAD_JS = """
const { CpuModel } = await import('/static/cpu_model.js');
const wasm = await (await fetch(arg.base + arg.lib)).arrayBuffer();
globalThis.__m = await CpuModel.create(wasm, { tensorCacheUrl: arg.base, cacheScope: 'webllm-widget-bench',
                                               contextWindowSize: arg.context });
globalThis.__m.forward(arg.prompt);  // warm up
return true;
"""
PREFILL_JS = """
const m = globalThis.__m;
const a = performance.now();
for (let i = 0; i < arg.repeat; i++) { m.reset(); globalThis.__logits = m.forward(arg.prompt); }
return (performance.now() - a) / arg.repeat;
"""
DECODE_JS = """
const m = globalThis.__m;
let logits = globalThis.__logits;
const a = performance.now();
for (let i = 0; i < arg.decode; i++) {
  let best = 0;
  for (let v = 1; v < logits.length; v++) if (logits[v] > logits[best]) best = v;
  logits = m.forward([best]);
}
return (performance.now() - a) / arg.decode;
"""


def profile_build(page, cdp, base: str, lib: str, args) -> dict:
    prompt = prompt_ids(args.prompt)
    js = lambda body, arg=None: page.evaluate(f"async (arg) => {{ {body} }}", arg)  # noqa: E731
    js(LOAD_JS, {"base": base, "lib": lib, "prompt": prompt, "context": args.prompt + args.decode + 16})
    out = {}
    for phase, body, arg in (("prefill", PREFILL_JS, {"prompt": prompt, "repeat": args.repeat}),
                             ("decode", DECODE_JS, {"decode": args.decode})):
        cdp.send("Profiler.setSamplingInterval", {"interval": args.interval_us})
        cdp.send("Profiler.start")
        ms = js(body, arg)
        prof = cdp.send("Profiler.stop")["profile"]
        s = summarize(self_times(prof), args.top)
        s["ms_per_call"] = round(ms, 2)
        s["tok_s"] = round((args.prompt if phase == "prefill" else 1) * 1000 / ms, 1)
        out[phase] = s
    js("globalThis.__m.dispose(); globalThis.__m = null; return true;")
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", help="a CPU model folder (default: the built-in SmolLM2 one)")
    ap.add_argument("--shapes", default="none", help="qwen0.5b: profile bench/shapes.py's 0.5B-shaped model instead")
    ap.add_argument("--builds", default="relaxed-simd,simd128")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=2, help="prefills of the prompt profiled")
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--interval-us", type=int, default=200)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = ap.parse_args(argv)

    from browser import HostServer, launch_chromium
    from cpu_page import serve_cpu_model
    from webllm_widget import models
    from webllm_widget.compile.cpu import LIBRARY_FILES

    if args.shapes == "qwen0.5b":
        from shapes import qwen05b_shaped_gguf
        from webllm_widget.compile.pipeline import build_model_folder

        folder = build_model_folder(qwen05b_shaped_gguf(), device="cpu")
    else:
        folder = Path(args.folder) if args.folder else models.default(device="cpu")
    result: dict = {"model": json.loads((folder / "manifest.json").read_text()).get("model_id"),
                    "settings": {k: getattr(args, k) for k in ("prompt", "repeat", "decode", "interval_us")},
                    "builds": {}}
    server = HostServer()
    browser = launch_chromium(server.origin + "/blank.html", webgpu=False)
    try:
        page = browser.new_page()
        page.goto(server.origin + "/blank.html")
        cdp = page.context.new_cdp_session(page)
        cdp.send("Profiler.enable")
        base = serve_cpu_model(server, f"prof-{folder.name}", folder / "model.wasm", folder)
        for isa in args.builds.split(","):
            result["builds"][isa] = profile_build(page, cdp, base, LIBRARY_FILES[isa], args)
    finally:
        browser.close()
        server.close()
    path = write_result("cpu_profile", result, Path(args.out) if args.out else None)
    for isa, r in result["builds"].items():
        for phase, s in r.items():
            print(f"== {result['model']} {isa} {phase}: {s['ms_per_call']} ms per call ({s['tok_s']} tok/s), "
                  f"profiled {s['total_ms']} ms")
            for g, v in s["groups"].items():
                print(f"   {v['share'] * 100:5.1f}%  {g}")
            for f in s["functions"][:args.top]:
                print(f"      {f['share'] * 100:5.1f}%  {f['name'][:70]}  [{f['group']}]")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
