"""Decode and prefill speed on the page's CPU (wasm32, one thread) beside llama.cpp and numpy, same run.

    python bench/cpu.py                          # built-in SmolLM2-135M (GGUF mode) and a Qwen2.5-0.5B-shaped model
    python bench/cpu.py --runs 5 --decode 64 --prompts 64 --quantization q4f32_1 --shapes none
    python bench/cpu.py --baselines none         # the browser CPU path only

Both library builds of each model are measured: SIMD128 (``cpu_path``; what the page picks, in Chromium too: see
``PREFERRED_CPU_BUILD`` in ``js/src/engine/cpu/features.ts``) and relaxed SIMD (``cpu_path_relaxed_simd``). ``ratios_vs_llama_cpp`` divides their medians by
llama.cpp's from the same run. The second model (``models``) is ``bench/shapes.py``'s random-weight GGUF of
Qwen2.5-0.5B's shapes (numpy is left out there: it would take minutes per run).

Chromium is started *without* WebGPU: this is the path users without a GPU get. Each run resets the
KV cache, prefills a fixed prompt (chunked like web-llm) and decodes ``--decode`` tokens greedily, timing
in the page (``performance.now``). The baselines get the same token ids, token counts and run count:
llama.cpp on one thread (``bench/llamacpp.py``, node-llama-cpp's prebuilt binary, same GGUF) and the
float32 numpy reference (``tests/helpers/reference.py``, BLAS limited to one thread; it decodes only
``--numpy-decode`` tokens per run, being slow).

The machine is shared, so before measuring the script waits (``--quiet-wait`` s at most) for a moment when
other work keeps fewer than half a core busy, and records for every run how many cores *other* processes
kept busy meanwhile (``other_busy_cores``) and the load average. The numbers to compare are the wall-clock
medians ``cpu_path.prompts.<n>.decode_tok_s`` / ``prefill_tok_s`` (issue #7's target: ≥ 20 tok/s decode);
``*_per_cpu_s`` (tokens per CPU-second of the browser's processes) is the speed with a core to itself.
JSON: ``bench/results/cpu.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, cpu_jiffies, wait_quiet, write_result  # noqa: E402
from llamacpp import prompt_ids  # noqa: E402

LOAD_JS = """
const { CpuModel } = await import('/static/cpu_model.js');
if (globalThis.__m) { globalThis.__m.dispose(); globalThis.__m = null; }
const t0 = performance.now();
const wasm = await (await fetch(arg.base + arg.lib)).arrayBuffer();
globalThis.__m = await CpuModel.create(wasm, { tensorCacheUrl: arg.base, cacheScope: 'webllm-widget-bench',
                                               contextWindowSize: arg.context });
return performance.now() - t0;
"""
PREFILL_JS = """
const m = globalThis.__m;
m.reset();
const a = performance.now();
globalThis.__logits = m.forward(arg.prompt);
return performance.now() - a;
"""
DECODE_JS = """
const m = globalThis.__m;
let logits = globalThis.__logits;
const steps = [], out = [];
for (let i = 0; i < arg.decode; i++) {
  let best = 0;
  for (let v = 1; v < logits.length; v++) if (logits[v] > logits[best]) best = v;
  out.push(best);
  const s = performance.now();
  logits = m.forward([best]);
  steps.push(performance.now() - s);
}
return { steps, out };
"""


#: Result keys of the page's CPU path, by library build: ``cpu_path`` is the build the page runs.
CPU_PATHS = (("cpu_path", "simd128"), ("cpu_path_relaxed_simd", "relaxed-simd"))
#: Every key a CPU-path section may have (``cpu_path_simd128``: results from before the page preferred SIMD128).
CPU_PATH_KEYS = ("cpu_path", "cpu_path_relaxed_simd", "cpu_path_simd128")


def summary(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs}


def _tree_cpu_seconds(marker: str) -> float:
    """CPU time (user + system) of the Chromium process tree whose browser process has ``marker`` in its cmdline."""
    from procmem import _children, _roots

    kids = _children()
    todo, seen, ticks = list(_roots(marker)), set(), 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo += kids.get(pid, [])
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(f[11]) + int(f[12])
        except (OSError, IndexError, ValueError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


class Meter:
    """Wall time, our own CPU time (a callable) and the machine's busy CPU time over one measured section."""

    def __init__(self, own_cpu):
        self.own_cpu = own_cpu

    def __enter__(self):
        self.w0, self.c0, (self.b0, _) = time.perf_counter(), self.own_cpu(), cpu_jiffies()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w0
        self.cpu = self.own_cpu() - self.c0
        busy = cpu_jiffies()[0] - self.b0
        # Cores other processes kept busy meanwhile (ours subtracted); clock-tick granularity, so clamp at 0.
        self.others = max(0.0, (busy - self.cpu) / max(self.wall, 1e-9))


# -- the page's CPU path -------------------------------------------------------------------------------

class Page:
    """One Chromium without WebGPU and a blank page on a loopback server, shared by every CPU-path measurement
    (``js_flags``: V8 flags, e.g. ``--no-enable-avx-vnni``)."""

    def __init__(self, js_flags: str = ""):
        self.js_flags = js_flags

    def __enter__(self):
        from browser import HostServer, launch_chromium

        self.server = HostServer()
        extra = (f"--js-flags={self.js_flags}",) if self.js_flags else ()
        self.browser = launch_chromium(self.server.origin + "/blank.html", webgpu=False, extra_args=extra)
        self.page = self.browser.new_page()
        self.page.goto(self.server.origin + "/blank.html")
        self.build = self.page.evaluate("async () => (await import('/static/cpu_model.js')).detectCpuBuild()")
        return self

    def __exit__(self, *exc):
        self.browser.close()
        self.server.close()


def bench_browser(pg: Page, folder: Path, lib: str, prompts: list[list[int]], decode: int, runs: int) -> dict:
    """The page's CPU path with the library file ``lib`` of ``folder`` (one of its builds)."""
    from cpu_page import serve_cpu_model

    res: dict = {"library": lib, "prompts": {}}
    page = pg.page
    base = serve_cpu_model(pg.server, f"bench-{folder.name}", folder / "model.wasm", folder)
    js = lambda body, arg=None: page.evaluate(f"async (arg) => {{ {body} }}", arg)  # noqa: E731
    context = max(len(p) for p in prompts) + decode + 16
    res["load_s"] = js(LOAD_JS, {"base": base, "lib": lib, "context": context}) / 1000
    own = lambda: _tree_cpu_seconds(pg.browser.profile)  # noqa: E731
    for ids in prompts:
        rows = []
        for _ in range(runs):
            with Meter(own) as mp:
                prefill_ms = js(PREFILL_JS, {"prompt": ids})
            with Meter(own) as md:
                dec = js(DECODE_JS, {"decode": decode})
            rows.append({"prefill_s": prefill_ms / 1000, "decode_s": sum(dec["steps"]) / 1000,
                         "steps_ms": dec["steps"], "tokens": dec["out"], "prefill_cpu_s": mp.cpu,
                         "decode_cpu_s": md.cpu, "others": (mp.others * mp.wall + md.others * md.wall)
                         / (mp.wall + md.wall)})
        n = len(ids)
        res["prompts"][str(n)] = {
            "prompt_tokens": n,
            "prefill_tok_s": summary([n / r["prefill_s"] for r in rows]),
            "decode_tok_s": summary([decode / r["decode_s"] for r in rows]),
            "prefill_tok_s_per_cpu_s": summary([n / max(1e-9, r["prefill_cpu_s"]) for r in rows]),
            "decode_tok_s_per_cpu_s": summary([decode / max(1e-9, r["decode_cpu_s"]) for r in rows]),
            "decode_step_ms_median": statistics.median(s for r in rows for s in r["steps_ms"]),
            "other_busy_cores": summary([round(r["others"], 2) for r in rows]),
            "greedy_tokens_first_run": rows[0]["tokens"][:16],
        }
    js("globalThis.__m.dispose(); globalThis.__m = null;")
    return res


# -- baselines --------------------------------------------------------------------------------------------

def bench_llama_cpp(gguf: Path, prompts: list[list[int]], decode: int, runs: int) -> dict:
    import resource

    from llamacpp import run

    own = lambda: (lambda r: r.ru_utime + r.ru_stime)(resource.getrusage(resource.RUSAGE_CHILDREN))  # noqa: E731
    with Meter(own) as m:
        res = run(gguf, prompts, decode, runs, threads=1)
    if "skipped" not in res:
        res["other_busy_cores_whole_run"] = round(m.others, 2)
    return res


NUMPY_WORKER = r"""
import json, sys, time, statistics
import numpy as np
sys.path.insert(0, sys.argv[1])
from reference import LlamaReference, load_weights
from webllm_widget.compile.checkpoint import open_checkpoint
a = json.loads(sys.argv[2])
ckpt = open_checkpoint(a["gguf"])
t = time.perf_counter()
ref = LlamaReference(load_weights(ckpt), ckpt.config)
out = {"load_s": time.perf_counter() - t, "dtype": "float32", "threads": 1, "decode_tokens": a["decode"],
       "prompts": {}}
for ids in a["prompts"]:
    pre, dec = [], []
    for _ in range(a["runs"]):
        ref.reset()
        t = time.perf_counter()
        tok = int(np.argmax(ref.forward(ids)[-1]))
        pre.append(len(ids) / (time.perf_counter() - t))
        t = time.perf_counter()
        for _ in range(a["decode"]):
            tok = int(np.argmax(ref.forward([tok])[-1]))
        dec.append(a["decode"] / (time.perf_counter() - t))
    s = lambda xs: {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs}
    out["prompts"][str(len(ids))] = {"prompt_tokens": len(ids), "prefill_tok_s": s(pre), "decode_tok_s": s(dec)}
print(json.dumps(out))
"""


def bench_numpy(gguf: Path, prompts: list[list[int]], decode: int, runs: int) -> dict:
    """The float32 numpy reference forward pass in a child process with BLAS held to one thread."""
    import resource

    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    arg = json.dumps({"gguf": str(gguf), "prompts": prompts, "decode": decode, "runs": runs})
    own = lambda: (lambda r: r.ru_utime + r.ru_stime)(resource.getrusage(resource.RUSAGE_CHILDREN))  # noqa: E731
    with Meter(own) as m:
        r = subprocess.run([sys.executable, "-c", NUMPY_WORKER, str(ROOT / "tests" / "helpers"), arg], capture_output=True,
                           text=True, env=env, timeout=1800)
    if r.returncode != 0:
        return {"skipped": f"numpy reference failed: {(r.stderr or r.stdout).strip()[-500:]}"}
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["other_busy_cores_whole_run"] = round(m.others, 2)
    return res


# -- driver -----------------------------------------------------------------------------------------------

def ratios(r: dict) -> dict:
    """Page CPU path (each build) over llama.cpp, per prompt: decode and prefill medians of the same run."""
    ll = (r.get("llama_cpp") or {}).get("prompts") or {}
    out: dict = {}
    for key in CPU_PATH_KEYS:
        for n, p in ((r.get(key) or {}).get("prompts") or {}).items():
            if n in ll:
                out.setdefault(key, {})[n] = {
                    "decode": round(p["decode_tok_s"]["median"] / ll[n]["decode_tok_s"]["median"], 3),
                    "prefill": round(p["prefill_tok_s"]["median"] / ll[n]["prefill_tok_s"]["median"], 3)}
    return out


def measure_model(pg: Page, folder: Path, args, prompts: list[list[int]], wanted: set[str], settle) -> dict:
    """One model: the page's CPU path with each library build, then llama.cpp and numpy on its GGUF."""
    from webllm_widget.compile.cpu import LIBRARY_FILES

    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("device") != "cpu":
        raise SystemExit(f"{folder} was built for {manifest.get('device')!r}; build it with device='cpu'")
    gguf = Path(manifest["source_path"]) if str(manifest.get("source_path", "")).endswith(".gguf") else None
    res: dict = {"model": manifest.get("model_id"), "quantization": manifest.get("quantization"),
                 "gguf": str(gguf) if gguf else None, "page_build": pg.build}
    for key, isa in CPU_PATHS:
        if not (folder / LIBRARY_FILES[isa]).is_file():
            res[key] = {"skipped": f"the folder has no {isa} build ({LIBRARY_FILES[isa]})"}
            continue
        q = settle(f"{res['model']}: CPU path, {isa} build (Chromium without WebGPU)")
        res[key] = {"backend": f"wasm32 {isa}, one thread, Chromium without WebGPU", "build": isa, "quiet_before": q,
                    **bench_browser(pg, folder, LIBRARY_FILES[isa], prompts, args.decode, args.runs)}
    if "llama.cpp" in wanted:
        q = settle(f"{res['model']}: llama.cpp (node-llama-cpp, one thread)")
        res["llama_cpp"] = (bench_llama_cpp(gguf, prompts, args.decode, args.runs) if gguf
                            else {"skipped": "not a GGUF model"})
        res["llama_cpp"]["quiet_before"] = q
    if "numpy" in wanted:
        q = settle(f"{res['model']}: numpy float32 reference (one BLAS thread)")
        res["numpy"] = (bench_numpy(gguf, prompts, args.numpy_decode, args.runs) if gguf
                        else {"skipped": "not a GGUF model"})
        res["numpy"]["quiet_before"] = q
    res["ratios_vs_llama_cpp"] = ratios(res)
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", help="a CPU model folder (default: build/find the built-in SmolLM2 one)")
    ap.add_argument("--quantization", default=None, help="for the built-in model: ggml (default) or q4f32_1")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prompts", default="32,128", help="prompt lengths in tokens")
    ap.add_argument("--decode", type=int, default=32, help="tokens to decode per run")
    ap.add_argument("--baselines", default="llama.cpp,numpy", help="comma list of llama.cpp,numpy, or 'none'")
    ap.add_argument("--shapes", default="qwen0.5b",
                    help="random-weight models of real shapes to measure too (bench/shapes.py): qwen0.5b, or 'none'")
    ap.add_argument("--numpy-decode", type=int, default=8,
                    help="tokens the numpy reference decodes per run (it runs ~1-10 tok/s: kept short)")
    ap.add_argument("--quiet-wait", type=float, default=90.0,
                    help="seconds to wait at most for other work to leave a core free before measuring")
    ap.add_argument("--baseline-quiet-wait", type=float, default=30.0, help="the same before each later section")
    ap.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = ap.parse_args(argv)

    from webllm_widget import models
    from webllm_widget.compile.pipeline import build_model_folder

    folder = Path(args.folder) if args.folder else models.default(device="cpu", quantization=args.quantization)
    shapes: dict[str, Path] = {}
    if "qwen0.5b" in args.shapes.split(","):
        from shapes import qwen05b_shaped_gguf

        shapes["qwen0.5b-shape"] = build_model_folder(qwen05b_shaped_gguf(), device="cpu")
    prompts = [prompt_ids(int(n)) for n in args.prompts.split(",") if n]
    wanted = set() if args.baselines == "none" else set(args.baselines.split(","))

    print(f"waiting up to {args.quiet_wait:.0f} s for a quiet moment…", file=sys.stderr)
    quiet = wait_quiet(args.quiet_wait)
    print(f"  {quiet}", file=sys.stderr)
    t_all = time.perf_counter()
    result: dict = {
        "settings": {"prompts": [len(p) for p in prompts], "decode_tokens": args.decode, "runs": args.runs,
                     "threads": 1, "greedy": True, "prompt_ids": "bench/llamacpp.py prompt_ids(n)"},
        "quiet_before": quiet, "target_decode_tok_s": 20,
        # Run as `nice -n -10 python bench/cpu.py` on a busy shared machine: the browser, node and numpy inherit it.
        "nice": os.nice(0),
    }

    def settle(what: str) -> dict:
        """Each section gets its own quiet moment (shorter wait than the first): record what it found."""
        q = wait_quiet(args.baseline_quiet_wait)
        print(f"== {what}; quiet check: {q}", file=sys.stderr)
        return q

    with Page() as pg:
        result["page_build"] = pg.build
        # the built-in model's sections stay at the top level (cpu_path, cpu_path_simd128, llama_cpp, numpy)
        result.update(measure_model(pg, folder, args, prompts, wanted, settle))
        result["models"] = {name: measure_model(pg, f, args, prompts, wanted - {"numpy"}, settle)
                            for name, f in shapes.items()}
    result["quiet_after"] = {"loadavg_1": round(os.getloadavg()[0], 2)}
    result["wall_s"] = round(time.perf_counter() - t_all, 1)
    path = write_result("cpu", result, Path(args.out) if args.out else None)

    for title, r in [(result.get("model"), result)] + [(n, m) for n, m in result["models"].items()]:
        print(f"-- {title}")
        for name in (*CPU_PATH_KEYS, "llama_cpp", "numpy"):
            e = r.get(name) or {}
            if "skipped" in e:
                print(f"{name:16s} skipped: {e['skipped']}")
            for n, p in e.get("prompts", {}).items():
                extra = (f", per CPU-s {p['decode_tok_s_per_cpu_s']['median']:.1f}, others busy "
                         f"{p['other_busy_cores']['median']:.2f} cores" if "other_busy_cores" in p else "")
                print(f"{name:16s} prompt {n:>4s}: prefill {p['prefill_tok_s']['median']:7.1f} tok/s, decode "
                      f"{p['decode_tok_s']['median']:6.1f} tok/s{extra}")
        print(f"ratios vs llama.cpp: {json.dumps(r.get('ratios_vs_llama_cpp'))}")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
