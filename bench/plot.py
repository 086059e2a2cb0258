"""Draw the benchmark results (bench/results/*.json) as PNGs and a Markdown table; optionally into README.md.

    python bench/plot.py [--results bench/results] [--readme README.md]

Writes ``channel.png``, ``decode.png``, ``kernels.png``, ``cpu.png`` (for whichever JSON files exist) and
``summary.md`` next to the JSON. With ``--readme`` the text between ``<!-- bench:start -->`` and
``<!-- bench:end -->`` in the README is replaced by the summary (the markers are appended under a
"Benchmarks" heading when missing); nothing else in the README changes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT  # noqa: E402

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _load(results: Path, name: str) -> dict | None:
    p = results / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _med(d: dict | None, *keys: str):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d.get("median") if isinstance(d, dict) else d


def _err(s: dict | None):
    """Asymmetric error bar (median-min, max-median) from a summary dict."""
    if not isinstance(s, dict) or s.get("median") is None:
        return [0], [0]
    return [s["median"] - s["min"]], [s["max"] - s["median"]]


def _bar_points(p: dict, lengths: list[int], key: str, shift: float) -> tuple[list, list, list, list]:
    """x, median, and the distances down to min and up to max, for one series' bars over the prompt lengths."""
    xs, ys, lo, hi = [], [], [], []
    for j, n in enumerate(lengths):
        s = p.get(str(n), {}).get(key)
        if isinstance(s, dict) and s.get("median"):
            xs.append(j + shift)
            ys.append(s["median"])
            lo.append(s["median"] - s["min"])
            hi.append(s["max"] - s["median"])
    return xs, ys, lo, hi


def plot_channel(d: dict, out: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    labels, vals, errs = [], [], ([], [])
    for label, s in [("comm", d["comm"]["MBps"]), ("HTTP route", d.get("http", {}).get("MBps")),
                     ("Jupyter /files/\n(baseline)", d.get("http", {}).get("files_endpoint_MBps_stored"))]:
        if isinstance(s, dict):
            labels.append(label)
            vals.append(s["median"])
            lo, hi = _err(s)
            errs[0].extend(lo)
            errs[1].extend(hi)
    a.bar(labels, vals, yerr=errs, color=["#4c72b0", "#55a868", "#999999"][:len(vals)], capsize=4)
    a.axhline(50, ls="--", c="#4c72b0", lw=1, label="comm target 50")
    a.axhline(200, ls="--", c="#55a868", lw=1, label="HTTP target 200")
    a.set_ylabel("MB/s kernel -> page (sha256 verified)")
    a.set_title(f"{d['size_bytes'] >> 20} MB artifact, median of {d['runs']}")
    a.legend(fontsize=8)
    lat = d["latency_ms"]
    b.bar(["p50", "p90", "p99"], [lat["p50"], lat["p90"], lat["p99"]], color="#c44e52")
    b.set_yscale("log")
    b.axhline(2, ls="--", c="grey", lw=1, label="p50 target 2 ms")
    b.axhline(5, ls=":", c="grey", lw=1, label="p99 target 5 ms")
    b.set_ylabel("ms, page emit -> kernel observer")
    b.set_title(f"token latency over {lat['n']} messages")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _series(d: dict) -> list[tuple[str, dict]]:
    """(label, {prompt_len: entry}) for every engine measured in decode.json."""
    rows = []
    for name, r in d.get("browser", {}).items():
        if "prompts" in r:
            rows.append((f"browser WebGPU {name}", r["prompts"]))
    for name, r in d.get("baselines", {}).items():
        if "prompts" in r:
            extra = f" ({r['threads']} thread{'s' if r['threads'] != 1 else ''})" if "threads" in r else " float32"
            rows.append((f"{name}{extra}", r["prompts"]))
    return rows


def plot_decode(d: dict, out: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    series = _series(d)
    lengths = sorted({int(n) for _, p in series for n in p})
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, key, title in [(axes[0], "prefill_tok_s", "prefill"), (axes[1], "decode_tok_s", "decode")]:
        w = 0.8 / max(1, len(series))
        for i, (label, p) in enumerate(series):
            xs, ys, lo, hi = _bar_points(p, lengths, key, i * w)
            ax.bar(xs, ys, w, yerr=[lo, hi], label=label, capsize=3)
        ax.set_xticks(np.arange(len(lengths)) + 0.4 - w / 2, [f"{n}-token prompt" for n in lengths])
        ax.set_yscale("log")
        ax.set_ylabel("tokens/s (log)")
        ax.set_title(f"{title}, median and min-max of {d['settings']['runs']} runs")
    axes[1].axhline(0.2, ls="--", c="grey", lw=1, label="MLC kernels, scaled (0.2)")
    axes[1].axhline(1.0, ls=":", c="grey", lw=1, label="5x that (target)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_kernels(d: dict, out: Path) -> None:
    import matplotlib.pyplot as plt

    ks = d.get("kernels", [])[:12]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    if ks:
        a.barh([k["kernel"][:38] for k in ks][::-1], [100 * (k["share"] or 0) for k in ks][::-1], color="#4c72b0")
        a.set_xlabel("% of the decode step's GPU time")
        a.set_title(f"{d['quantization']}: {d.get('dispatches_per_step')} dispatches per step")
        a.tick_params(axis="y", labelsize=7)
    bound = d["bound"]
    b.bar(["measured step", "bound\n(compute)", "bound\n(memory)"],
          [d["step_wall_ms"]["median"], bound["compute_ms"], bound["memory_ms"]], color=["#c44e52", "#8172b2", "#55a868"])
    b.set_yscale("log")
    b.set_ylabel("ms per decode token (log)")
    b.set_title(f"{bound['fma_GFLOPs']:.2f} GFLOP/s, {bound['read_GBps']:.2f} GB/s measured")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


CPU_LABEL = "page CPU (wasm SIMD128, 1 thread)"
CPU_RELAXED_LABEL = "page CPU (wasm relaxed SIMD, 1 thread)"
LLAMA_LABEL = "llama.cpp (1 thread)"


def _cpu_label(entry: dict) -> str:
    return CPU_RELAXED_LABEL if entry.get("build") == "relaxed-simd" else CPU_LABEL


def _cpu_series(cpu: dict, de: dict | None) -> list[tuple[str, dict]]:
    """(label, {prompt_len: entry}) for the CPU comparison: the page's CPU path (each library build), the WebGPU
    path (decode.json, its default mode), llama.cpp and numpy (cpu.json, same run as the CPU path)."""
    rows = []
    for key in ("cpu_path", "cpu_path_relaxed_simd", "cpu_path_simd128"):
        if "prompts" in cpu.get(key, {}):
            rows.append((_cpu_label(cpu[key]), cpu[key]["prompts"]))
    for name, r in ((de or {}).get("browser") or {}).items():
        if "prompts" in r:
            rows.append((f"page WebGPU {name} (decode.py)", r["prompts"]))
            break
    if "prompts" in cpu.get("llama_cpp", {}):
        rows.append((LLAMA_LABEL, cpu["llama_cpp"]["prompts"]))
    if "prompts" in cpu.get("numpy", {}):
        rows.append(("numpy float32 (1 thread)", cpu["numpy"]["prompts"]))
    return rows


def plot_cpu(cpu: dict, de: dict | None, out: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [(cpu.get("model") or "built-in model", _cpu_series(cpu, de))]
    panels += [(name, _cpu_series(m, None)) for name, m in (cpu.get("models") or {}).items()]
    colors = {CPU_LABEL: "#dd8452", CPU_RELAXED_LABEL: "#c44e52", LLAMA_LABEL: "#55a868",
              "numpy float32 (1 thread)": "#999999"}
    fig, grid = plt.subplots(len(panels), 2, figsize=(11, 4.2 * len(panels)), squeeze=False)
    labelled: set[str] = set()
    for axes, (model, series) in zip(grid, panels):
        lengths = sorted({int(n) for _, p in series for n in p})
        for ax, key, title in [(axes[0], "prefill_tok_s", "prefill"), (axes[1], "decode_tok_s", "decode")]:
            ax.set_ylim(0.1, 1000)
            w = 0.8 / max(1, len(series))
            for i, (label, p) in enumerate(series):
                xs, ys, lo, hi = _bar_points(p, lengths, key, i * w)
                ax.bar(xs, ys, w, yerr=[lo, hi], label=None if label in labelled else label, capsize=3,
                       color=colors.get(label, "#4c72b0"))
                labelled.add(label)
                for x, y, h in zip(xs, ys, hi):
                    ax.annotate(f"{y:.3g}", (x, (y + h) * 1.08), ha="center", va="bottom", fontsize=7)
            ax.set_xticks(np.arange(len(lengths)) + 0.4 - w / 2, [f"{n}-token prompt" for n in lengths])
            ax.set_yscale("log")
            ax.set_ylabel("tokens/s, wall clock (log)")
            ax.set_title(f"{model} — {title}: median, min-max of {cpu['settings']['runs']} runs", fontsize=9)
        axes[1].axhline(cpu.get("target_decode_tok_s", 20), ls="--", c="#dd8452", lw=1,
                        label=None if "target" in labelled else "CPU path target (20)")
        labelled.add("target")
    fig.legend(fontsize=8, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.1 / len(panels), 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _ratio_lines(title: str, r: dict) -> list[str]:
    """Page CPU path / llama.cpp, decode and prefill medians of the same run, per build and prompt."""
    rat = r.get("ratios_vs_llama_cpp") or {}
    out = []
    for key in ("cpu_path", "cpu_path_relaxed_simd", "cpu_path_simd128"):
        label = "relaxed SIMD" if (r.get(key) or {}).get("build") == "relaxed-simd" else "SIMD128"
        for n, v in sorted((rat.get(key) or {}).items(), key=lambda kv: int(kv[0])):
            out.append(f"| {title} | {label} | {n} | {v['decode']:.2f}× | {v['prefill']:.2f}× |")
    return out


def cpu_summary(cpu: dict, de: dict | None) -> list[str]:
    s, q = cpu["settings"], cpu.get("quiet_before", {})
    np_dec = (cpu.get("numpy") or {}).get("decode_tokens")
    lines = [f"**CPU path vs WebGPU, llama.cpp and numpy** (`bench/cpu.py`, same GGUF and token ids, greedy, "
             f"{s['decode_tokens']} decoded tokens{f' (numpy: {np_dec})' if np_dec else ''}, median (min–max) of "
             f"{s['runs']} runs, wall clock; the WebGPU row is `bench/decode.py`'s, from its own run). "
             f"Measured {cpu['when']} after waiting {q.get('waited_s', '?')} s for a quiet moment "
             f"({'found' if q.get('quiet') else 'not found'}: other work kept {q.get('busy_cores', '?')} cores busy, "
             f"load average {q.get('loadavg_1', '?')})"
             + (f"; every engine ran at nice {cpu['nice']} (priority over the other jobs)" if cpu.get("nice") else "")
             + ".", "",
             "| engine | prompt | prefill tok/s | decode tok/s | decode tok/s per CPU-second | other cores busy |",
             "|---|---|---|---|---|---|"]
    whole = {"llama.cpp (1 thread)": (cpu.get("llama_cpp") or {}).get("other_busy_cores_whole_run"),
             "numpy float32 (1 thread)": (cpu.get("numpy") or {}).get("other_busy_cores_whole_run")}
    for label, p in _cpu_series(cpu, de):
        for n, e in sorted(p.items(), key=lambda kv: int(kv[0])):
            busy = _med(e, "other_busy_cores") if "other_busy_cores" in e else whole.get(label)
            lines.append(f"| {label} | {e.get('prompt_tokens', n)} | {_spread(e.get('prefill_tok_s'))} | "
                         f"{_spread(e.get('decode_tok_s'))} | {_spread(e.get('decode_tok_s_per_cpu_s'))} | "
                         f"{_f(busy)} |")
    for name in ("llama_cpp", "numpy"):
        if "skipped" in (cpu.get(name) or {}):
            lines.append(f"\n{name.replace('_', '.')}: skipped — {cpu[name]['skipped']}")
    for name, m in (cpu.get("models") or {}).items():
        lines += ["", f"**{name}** ({m.get('model')}, {m.get('quantization')}; random weights of the real shapes, "
                      "`bench/shapes.py`), same run:", "",
                  "| engine | prompt | prefill tok/s | decode tok/s | decode tok/s per CPU-second | other cores busy |",
                  "|---|---|---|---|---|---|"]
        lb = (m.get("llama_cpp") or {}).get("other_busy_cores_whole_run")
        for label, p in _cpu_series(m, None):
            for n, e in sorted(p.items(), key=lambda kv: int(kv[0])):
                busy = _med(e, "other_busy_cores") if "other_busy_cores" in e else lb
                lines.append(f"| {label} | {e.get('prompt_tokens', n)} | {_spread(e.get('prefill_tok_s'))} | "
                             f"{_spread(e.get('decode_tok_s'))} | {_spread(e.get('decode_tok_s_per_cpu_s'))} | "
                             f"{_f(busy)} |")
    ratio_rows = _ratio_lines(cpu.get("model") or "built-in", cpu)
    for name, m in (cpu.get("models") or {}).items():
        ratio_rows += _ratio_lines(name, m)
    if ratio_rows:
        lines += ["", "Page CPU path ÷ llama.cpp (one thread each), medians of the same run:", "",
                  "| model | page build | prompt | decode | prefill |", "|---|---|---|---|---|", *ratio_rows]
    ll = cpu.get("llama_cpp") or {}
    if "prompts" in ll:
        lines += ["", f"llama.cpp: npm `node-llama-cpp` {ll.get('version')} (prebuilt CPU binary, llama.cpp "
                      f"{ll.get('llama_cpp_release')}), {ll.get('threads')} thread; `bench/llamacpp.py`."]
    target = cpu.get("target_decode_tok_s", 20)
    n0 = str(min(s["prompts"]))
    best = _med(cpu, "cpu_path", "prompts", n0, "decode_tok_s")
    busy = _med(cpu, "cpu_path", "prompts", n0, "other_busy_cores")
    per_cpu = _med(cpu, "cpu_path", "prompts", n0, "decode_tok_s_per_cpu_s")
    if best is not None:
        verdict = (f"{'meets' if best >= target else 'below'} the ≥ {target} tok/s target of issue #7"
                   if busy is not None and busy < 0.5 else
                   f"not a quiet measurement: with the core to itself the browser made {per_cpu:.1f} tokens "
                   "per CPU-second, the better estimate of the one-thread speed")
        lines += ["", f"CPU path decode at the {n0}-token prompt: {best:.1f} tok/s wall clock while other work "
                      f"kept {_f(busy)} cores busy ({verdict})."]
    return lines + ["", "![cpu](bench/results/cpu.png)", ""]


def _f(x, fmt="{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def _spread(s) -> str:
    if not isinstance(s, dict) or s.get("median") is None:
        return "–"
    return f"{s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f})"


def summary(results: Path) -> str:
    lines: list[str] = []
    ch, de, ke = _load(results, "channel"), _load(results, "decode"), _load(results, "kernels")
    cpu = _load(results, "cpu")
    any_d = next((x for x in (de, ch, ke, cpu) if x), None)
    if any_d:
        m = any_d["machine"]
        ad = (de or {}).get("browser", {})
        adapter = next((r.get("adapter") for r in ad.values() if r.get("adapter")), None) or (ke or {}).get("adapter")
        a = f"{adapter.get('vendor')} {adapter.get('architecture')}{' (fallback adapter)' if adapter.get('is_fallback') or adapter.get('isFallbackAdapter') else ''}" if adapter else "–"
        lines += [f"Machine: {m.get('cpu', '?')}, {m.get('cpus')} cores, {m.get('mem_gb')} GB; {m.get('chromium')}; "
                  f"WebGPU adapter: {a}. Measured {any_d['when']}; load average when written "
                  f"{m.get('loadavg_1_5_15', ['?'])[0]} (other work shared the 2 cores: absolute numbers are low, "
                  "compare within a table).", ""]
    if de:
        s = de["settings"]
        lines += [f"**Decode** (`bench/decode.py`: greedy, {s['max_tokens']} output tokens, median (min–max) of "
                  f"{s['runs']} runs; tok/s)", "",
                  "| engine | prompt | prefill tok/s | decode tok/s | time to first token s |", "|---|---|---|---|---|"]
        for label, p in _series(de):
            for n, e in sorted(p.items(), key=lambda kv: int(kv[0])):
                lines.append(f"| {label} | {e.get('prompt_tokens', n)} | {_spread(e.get('prefill_tok_s'))} | "
                             f"{_spread(e.get('decode_tok_s'))} | {_spread(e.get('ttft_s'))} |")
        lines += ["", "| browser mode | load cold s | load warm s | bytes sent cold | peak browser memory (PSS / RSS sum) MB |",
                  "|---|---|---|---|---|"]
        for name, r in de.get("browser", {}).items():
            if "error" in r:
                lines.append(f"| {name} | failed: {r['error'][:80]} | | | |")
                continue
            lines.append(f"| {name} | {_f(r['load_cold']['s'], '{:.1f}')} | {_f(r['load_warm'].get('s'), '{:.1f}')} | "
                         f"{(r['load_cold']['bytes_sent'] or 0) / 1e6:.0f} MB | {r['peak_pss_mb']:.0f} / {r['peak_rss_mb']:.0f} |")
        for name, r in de.get("baselines", {}).items():
            if "skipped" in r:
                if name == "llama.cpp" and "prompts" in ((cpu or {}).get("llama_cpp") or {}):
                    lines.append("\nllama.cpp: not run here (llama-cpp-python is not installed); "
                                 "see the CPU table below (`bench/llamacpp.py`, node-llama-cpp).")
                else:
                    lines.append(f"\n{name}: skipped — {r['skipped']}")
        lines += ["", "![decode](bench/results/decode.png)", ""]
    if ch:
        h = ch.get("http", {})
        lat = ch["latency_ms"]
        lines += [f"**Channel** (`bench/channel.py`, real JupyterLab, {ch['size_bytes'] >> 20} MB of random bytes, "
                  f"cache emptied first, median (min–max) of {ch['runs']}, "
                  + ("Playwright attached while measuring" if ch.get("devtools_attached")
                     else "no DevTools client attached while measuring, as in a user's browser") + ")", "",
                  "Into the page: the bytes verified (sha256) in page memory, as model files reach the engine "
                  "(web-llm's cache then keeps them). Stored: also written to the loader's Cache Storage "
                  "before the page answers (the engine bundle and GPU libraries).", "",
                  "| path | into the page, MB/s | stored, MB/s | target |", "|---|---|---|---|",
                  f"| comm (BlobSender → BlobLoader) | {_spread(ch['comm']['MBps'])} | "
                  f"{_spread(ch['comm'].get('MBps_stored'))} | ≥ 50 |",
                  f"| HTTP route (server extension → BlobLoader) | {_spread(h.get('MBps'))} | "
                  f"{_spread(h.get('MBps_stored'))} | ≥ 200 |",
                  f"| baseline: Jupyter's own `/files/` endpoint → Cache Storage, not verified, same run | | "
                  f"{_spread(h.get('files_endpoint_MBps_stored'))} | |",
                  "", f"Token latency page → kernel observer ({lat['n']} messages while a cell awaits): "
                  f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms (targets < 2, < 5).", "",
                  "![channel](bench/results/channel.png)", ""]
    if ke:
        b = ke["bound"]
        lines += [f"**Decode step kernels** (`bench/kernels.py`, {ke['quantization']}, {ke.get('method')}): step "
                  f"{ke['step_wall_ms']['median']:.0f} ms wall ({ke['decode_tok_s_from_step']:.2f} tok/s), "
                  f"{ke.get('dispatches_per_step', '–')} dispatches. Adapter measured {b['fma_GFLOPs']:.2f} GFLOP/s, "
                  f"{b['read_GBps']:.2f} GB/s; the model needs {b['flops_per_token'] / 1e6:.0f} MFLOP and "
                  f"{b['param_bytes'] / 1e6:.0f} MB per token, so the bound is {b['step_ms']:.0f} ms "
                  f"({b['tok_s']:.2f} tok/s); the step reaches {b['fraction_of_bound']:.0%} of it.", "",
                  "| kernel | ms/step | calls | share |", "|---|---|---|---|"]
        for k in ke.get("kernels", [])[:10]:
            lines.append(f"| `{k['kernel']}` | {k['ms']:.1f} | {k['calls']} | {100 * (k['share'] or 0):.1f}% |")
        lines += ["", "![kernels](bench/results/kernels.png)", ""]
    if cpu and "cpu_path" in cpu:
        lines += cpu_summary(cpu, de)
    gpu = _load(results, "gpu")
    if gpu and (gpu.get("runs") or gpu.get("chrome")):  # a browser-only run has no Node runs
        lines += gpu_summary(gpu)
    if gpu and (gpu.get("official") or gpu.get("shapes")):
        lines += gpu_shape_lines(gpu)
    return "\n".join(lines)


def _gpu_engines(gpu: dict) -> list[tuple[str, dict, dict, dict]]:
    """(label, prompts, bound per prompt, dispatch/CPU figures per prompt) for each engine in ``gpu.json``."""
    out = []
    ch = gpu.get("chrome") or {}
    if ch.get("prompts") and not ch.get("error"):
        per = ch.get("per_prompt") or {}
        out.append((f"{ch.get('chromium', 'Chromium')} (WebGPU, Vulkan)", ch["prompts"], per, per))
    node = (gpu.get("runs") or {}).get("model") or {}
    if node.get("prompts") and not node.get("error"):
        out.append(("Node + Dawn for Node (Vulkan)", node["prompts"], node.get("bound") or {},
                    (gpu.get("summary") or {}).get("per_prompt") or {}))
    return out


def gpu_summary(gpu: dict) -> list[str]:
    """The README part for ``bench/gpu_device.py``: decode on a real GPU beside its memory-bandwidth bound."""
    g = gpu.get("gpu", {})
    copy = (g.get("torch") or {}).get("copy", {}).get("GBps_median")
    lines = [f"**On a real GPU** (`bench/gpu_device.py`, run by hand on a lent {g.get('name', 'GPU')}, driver "
             f"{(g.get('nvidia_smi') or {}).get('driver_version', '?')}; not part of CI): the built-in SmolLM2-135M "
             "in its default mode, the widget's engine and WGSL kernels, greedy, median (min–max). The bound is the "
             "bytes a decode step reads (weights + KV cache) at the device-to-device copy bandwidth measured on the "
             f"same GPU ({_f(copy, '{:.0f}')} GB/s; datasheet {g.get('datasheet_GBps', '–')}). Measured {gpu.get('when', '')}"
             + _gpu_lib_text(gpu) + ".",
             "", "| engine | prompt | prefill tok/s | decode tok/s | bound tok/s | share of bound | dispatches/token |"
             " wall µs/dispatch | engine CPU s per s |", "|---|---|---|---|---|---|---|---|---|"]
    busy = {}
    for label, prompts, bounds, extra in _gpu_engines(gpu):
        for n, p in prompts.items():
            b, x = bounds.get(n, {}), extra.get(n, {})
            frac = b.get("fraction_of_bound")
            if x.get("host_cpu_per_wall") is not None:
                busy.setdefault(label, []).append(x["host_cpu_per_wall"])
            lines.append(f"| {label} | {p.get('prompt_tokens', n)} | {_spread(p.get('prefill_tok_s'))} | "
                         f"{_spread(p.get('decode_tok_s'))} | {_f(b.get('bound_tok_s'), '{:,.0f}')} | "
                         f"{'–' if frac is None else f'{100 * frac:.2f}%'} | "
                         f"{_f(x.get('dispatches_per_token'), '{:.0f}')} | {_f(x.get('us_per_dispatch'), '{:.0f}')} | "
                         f"{_f(x.get('host_cpu_per_wall'))} |")
    reps = ((gpu.get("chrome") or {}).get("repeats")) or []
    if reps:  # the same job in later calls on the same machine: how far one call's medians move
        lines += ["", "Chromium decode tok/s in further calls (same machine, same job): " + "; ".join(
            " / ".join(_f((r.get(n) or {}).get("decode_tok_s"), "{:.1f}") for n in r) for r in reps)
            + f" (prompts {', '.join(reps[0].keys())})."]
    if busy:
        lines += ["", "Engine CPU s per s: CPU time of the engine's processes (Chromium: all of its processes) per "
                  "second of decoding. " + "; ".join(f"{k}: {min(v):.2f}–{max(v):.2f}" for k, v in busy.items())
                  + ". Near 1 means the step waits on the host's per-dispatch work; well under 1 means it waits on "
                  "the GPU or on a round trip per token, not on memory bandwidth, which it uses a fraction of a "
                  "percent of."]
    lines += _gpu_ab_lines(gpu)
    lines += _gpu_kernel_lines(((gpu.get("summary") or {}).get("chrome") or {}).get("kernels") or {})
    lines.append("")
    return lines


def _gpu_ab_lines(gpu: dict) -> list[str]:
    """Comparisons made in the same call on the same GPU: the engine's batched kernel dispatch against tvmjs's own
    (``chrome_run.py --upstream-dispatch``), and the new model library against an earlier one (``--job baseline``)."""
    s = gpu.get("summary") or {}
    out: list[str] = []
    d = ((s.get("chrome") or {}).get("dispatch") or {}).get("per_prompt") or {}
    if d:
        out += ["", "Kernel dispatch in Chromium, same call: the engine's batched dispatch (one compute pass per "
                "stretch between copies, bind groups reused, one uniform upload per pass) against tvmjs's own (a pass, "
                "a uniform write and a new bind group per kernel), decode tok/s: " + "; ".join(
                    f"prompt {n}: {_f(b.get('batched_decode_tok_s'), '{:.1f}')} vs {_f(b.get('upstream_decode_tok_s'), '{:.1f}')}"
                    f" (x{_f(b.get('batched_over_upstream'), '{:.2f}')})" for n, b in d.items()) + "."]
    sync = next((v for v in ((gpu.get("chrome") or {}).get("variants") or []) if v.get("name") == "sync-loop"), None)
    if sync and sync.get("decode_tok_s"):
        out += ["", "Decode loop in Chromium, same call: the engine's asynchronous read-back (step k+1 is submitted "
                "before the id of step k is read back; stop conditions checked one step behind) against web-llm's own "
                "loop (it waits for every id), decode tok/s: " + "; ".join(
                    f"prompt {n}: {_f((sync.get('plain_decode_tok_s_same_call') or {}).get(n), '{:.1f}')} vs "
                    f"{_f(d, '{:.1f}')} (x{_f(((sync.get('plain_decode_tok_s_same_call') or {}).get(n) or 0) / d if d else None, '{:.2f}')})"
                    for n, d in sync["decode_tok_s"].items()) + "."]
    base = gpu.get("chrome_baseline") or {}
    vs = s.get("chrome_vs_baseline_library") or {}
    if base.get("per_prompt"):
        what = ("the previous build (the earlier library of the same model, sha256 "
                f"`{(base.get('library_sha256') or '')[:12]}`, with web-llm's own decode loop)"
                if str(base.get("decode_loop") or "").startswith("sync") else
                f"the earlier library of the same model (sha256 `{(base.get('library_sha256') or '')[:12]}`)")
        out += ["", f"Against {what}, same call, Chromium: " + "; ".join(
                    f"prompt {n}: prefill x{_f((vs.get(n) or {}).get('prefill_new_over_baseline'), '{:.2f}')}, "
                    f"decode x{_f((vs.get(n) or {}).get('decode_new_over_baseline'), '{:.2f}')} "
                    f"(earlier: {_f(b.get('prefill_tok_s'), '{:.0f}')} / {_f(b.get('decode_tok_s'), '{:.1f}')} tok/s)"
                    for n, b in base["per_prompt"].items()) + "."]
    return out


def gpu_shape_lines(gpu: dict) -> list[str]:
    """gpu.json's ``official`` (MLC's prebuilt library run by MLC's web-llm beside the project's build of the same
    shape, same call) and ``shapes`` (real model shapes with random weights beside the bandwidth bound)."""
    lines: list[str] = []
    o = gpu.get("official") or {}
    if o.get("per_prompt"):
        lib = o.get("library") or {}
        lines += [f"**MLC's official library beside the project's build** (`bench/gpu_device.py prepare --official-lib`, "
                  f"{o.get('gpu', 'GPU')}, {o.get('chromium', 'Chromium')}, one call, {o.get('when', '')}): MLC's prebuilt "
                  f"`{(lib.get('path') or '').rsplit('/', 1)[-1]}` ({lib.get('repo', '')}, sha256 "
                  f"`{(lib.get('library_sha256') or '')[:12]}`) run by npm `@mlc-ai/web-llm` {o.get('web_llm', '')}, against "
                  f"`webllm-widget build --hf` of the same Qwen2-0.5B shape in the widget's engine; random weights "
                  + ("(the same shard bytes for both)" if o.get("same_weight_bytes") else "")
                  + "; same tokenizer, chat template and prompts, greedy, fixed output length; median tok/s as each "
                  "web-llm reports them. Ratio = project / official."
                  + (f" Error: {o['error']}" if o.get("error") else ""),
                  "", "| prompt | decode, project | decode, official | ratio | prefill, project | prefill, official | "
                  "prefill ratio | dispatches/token (project / official) |", "|---|---|---|---|---|---|---|---|"]
        for n, b in o["per_prompt"].items():
            pt = (b.get("prompt_tokens") or {}).get("project") or n
            lines.append(f"| {pt} | {_f(b.get('project_decode_tok_s'), '{:.1f}')} | {_f(b.get('official_decode_tok_s'), '{:.1f}')} | "
                         f"x{_f(b.get('ratio'), '{:.2f}')} | {_f(b.get('project_prefill_tok_s'), '{:,.0f}')} | "
                         f"{_f(b.get('official_prefill_tok_s'), '{:,.0f}')} | x{_f(b.get('prefill_ratio'), '{:.2f}')} | "
                         f"{_f(b.get('project_dispatches_per_token'), '{:.0f}')} / {_f(b.get('official_dispatches_per_token'), '{:.0f}')} |")
        sub = [(b.get("submits_per_token") or {}, b.get("host_cpu_per_wall") or {}) for b in o["per_prompt"].values()]
        if any(x.get("official") for x, _ in sub):
            lines += ["", "Host side, per prompt: queue submits per token (project / official) "
                      + ", ".join(f"{_f(x.get('project'), '{:.0f}')} / {_f(x.get('official'), '{:.0f}')}" for x, _ in sub)
                      + "; Chromium's CPU seconds per second " + ", ".join(
                          f"{_f(c.get('project'))} / {_f(c.get('official'))}" for _, c in sub) + "."]
        lines.append("")
    sh = gpu.get("shapes") or {}
    if sh:
        first = next(iter(sh.values()))
        lines += [f"**Real model shapes** (random weights written on the GPU machine, `q4f32_1`, the widget's engine in "
                  f"{first.get('chromium', 'Chromium')}, {first.get('gpu', 'GPU')}, {first.get('when', '')}): the bound is "
                  f"the bytes a decode step reads at the measured copy bandwidth ({_f(first.get('copy_GBps'), '{:.0f}')} GB/s).",
                  "", "| shape | prompt | prefill tok/s | decode tok/s | bound tok/s | share of bound |", "|---|---|---|---|---|---|"]
        for name, v in sh.items():
            for n, b in (v.get("per_prompt") or {}).items():
                share = b.get("share_of_bound")
                lines.append(f"| {name} | {n} | {_f(b.get('prefill_tok_s'), '{:,.0f}')} | {_f(b.get('decode_tok_s'), '{:.1f}')} | "
                             f"{_f(b.get('bound_tok_s'), '{:,.0f}')} | {'–' if share is None else f'{100 * share:.1f}%'} |")
            if v.get("error"):
                lines.append(f"| {name} | error: {str(v['error'])[:200]} | | | | |")
        lines.append("")
    return lines


def _gpu_lib_text(gpu: dict) -> str:
    """Which model build was measured (folder name with its hash, library sha256, source commit) and, when the
    previous gpu.json measured another build, that build's decode speeds for comparison."""
    s = gpu.get("summary") or {}
    lib = s.get("model_lib") or {}
    folder = lib.get("folder") or s.get("model")
    if not folder:
        return ""
    text = f" with model folder `{folder}`"
    if lib.get("library_sha256"):
        text += f" (library sha256 `{lib['library_sha256'][:12]}`"
        text += f", built from commit `{lib['source_commit']}`)" if lib.get("source_commit") else ")"
    prev = gpu.get("previous") or {}
    if prev.get("model"):
        def speeds(d: dict) -> str:
            return " / ".join(_f(v, "{:.1f}") for v in (d or {}).values()) or "–"
        on = f" on the {prev['gpu']}" if prev.get("gpu") and prev.get("gpu") != (gpu.get("gpu") or {}).get("name") else ""
        node = {k: v for k, v in (prev.get("node_decode_tok_s") or {}).items() if v}
        prompts = ", ".join((node or prev.get("chrome_decode_tok_s") or {}).keys())
        text += (f". The previous build (`{prev['model']}`, {prev.get('when', '')}{on}, another call) decoded "
                 f"{speeds(prev.get('chrome_decode_tok_s'))} tok/s in Chromium"
                 + (f" and {speeds(node)} in Node + Dawn" if node else "") + f" (prompts {prompts})")
    return text


def _gpu_kernel_lines(k: dict) -> list[str]:
    """Chromium's decode step split by timestamp queries (``chrome_run.py --kernels``): GPU busy of the step's wall
    per prompt, and the top kernels of the first prompt."""
    per = k.get("per_prompt") or {}
    if not per:
        return []
    steps = "; ".join(f"prompt {n}: GPU busy {_f(b.get('gpu_busy_ms'), '{:.2f}')} ms of {_f(b.get('step_wall_ms'), '{:.2f}')}"
                      f" ms per step (span {_f(b.get('gpu_span_ms'), '{:.2f}')} ms, "
                      f"{_f(b.get('timed_decode_tok_s'), '{:.1f}')} tok/s while timed)" for n, b in per.items())
    n, first = next(iter(per.items()))
    lines = ["", f"Decode step in Chromium, every compute pass timed on the GPU (timestamp queries, {k.get('when', '')}): "
             + steps + ". GPU span: first pass start to last pass end, idle gaps between passes included.",
             "", f"| kernel (prompt {n}) | ms per step | calls per step | µs per call | share of GPU time |",
             "|---|---|---|---|---|"]
    for t in first.get("top_kernels") or []:
        share = t.get("share_of_gpu")
        lines.append(f"| `{t.get('kernel')}` | {_f(t.get('ms_per_step'), '{:.3f}')} | {_f(t.get('calls_per_step'), '{:.0f}')} | "
                     f"{_f(t.get('us_per_call'), '{:.1f}')} | {'–' if share is None else f'{100 * share:.1f}%'} |")
    return lines


def update_readme(readme: Path, text: str) -> None:
    body = readme.read_text() if readme.exists() else ""
    block = f"{START}\n{text}\n{END}"
    if START in body and END in body:
        head, rest = body.split(START, 1)
        body = head + block + rest.split(END, 1)[1]
    else:
        body = body.rstrip() + "\n\n## Benchmarks\n\nRun `make bench` (JSON + PNG in `bench/results/`).\n\n" + block + "\n"
    readme.write_text(body)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--readme", type=Path, nargs="?", const=ROOT / "README.md", default=None)
    ap.add_argument("--pngs", default="channel,decode,kernels,cpu",
                    help="which PNGs to draw (comma list); the table always covers every JSON present")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    pngs = set(args.pngs.split(","))
    for name, fn in [("channel", plot_channel), ("decode", plot_decode), ("kernels", plot_kernels)]:
        d = _load(args.results, name)
        if d is not None and name in pngs:
            fn(d, args.results / f"{name}.png")
            print(f"-> {args.results / (name + '.png')}")
    cpu = _load(args.results, "cpu")
    if cpu is not None and "cpu_path" in cpu and "cpu" in pngs:
        plot_cpu(cpu, _load(args.results, "decode"), args.results / "cpu.png")
        print(f"-> {args.results / 'cpu.png'}")
    text = summary(args.results)
    (args.results / "summary.md").write_text(text + "\n")
    if args.readme:
        update_readme(args.readme, text)
        print(f"-> {args.readme} (Benchmarks section)")


if __name__ == "__main__":
    main()
