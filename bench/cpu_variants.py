"""Other builds of the relaxed-SIMD CPU library beside a model folder's own two, same page, interleaved rounds.

    python bench/cpu_variants.py                                   # Qwen2.5-0.5B shape, prompt 64, 16 decode steps
    python bench/cpu_variants.py --model builtin --rounds 8
    python bench/cpu_variants.py --js-flags=--no-enable-avx-vnni   # V8 as on x86 without AVX-VNNI

Variants (``compile/cpu.py``, :func:`build_cpu_library_variant`; cached under ``<cache>/bench/cpu-variants``):

- ``i16x8``: the 4-bit products add ``i16x8.relaxed_dot_i8x16_i7x16_s`` results (one ``pmaddubsw`` each on x86) as
  16-bit sums and widen them once a group, instead of chaining ``i32x4.relaxed_dot_i8x16_i7x16_add_s`` (the
  folder's build: one ``vpdpbusd`` on x86 with AVX-VNNI, ``pmaddubsw`` + ``pmaddwd`` + ``paddd`` without). The
  same integer sums, the same logits.
- ``int8`` / ``int8-i16x8``: single-byte activations (llama.cpp's rounding) with either way of adding: half the
  byte dot products, other logits (SmolLM2's greedy answer changes: ``compile/cpu.py`` ACTIVATIONS), so no model
  folder carries them; measured to know what the second byte costs.

Each round loads every library in turn (order reversed every other round), prefills ``--prompt`` tokens and decodes
``--decode`` greedily, timing in the page as ``bench/cpu.py`` does; medians over rounds, with tokens per CPU-second of
the browser's processes. ``--js-flags`` passes V8 flags (``--no-enable-avx-vnni`` makes V8 lower the ``i32x4``
dot as on x86 without AVX-VNNI, on a host that has it). JSON: ``bench/results/cpu_variants_<model>[_<flags>].json``.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import wait_quiet, write_result  # noqa: E402
from cpu import DECODE_JS, LOAD_JS, PREFILL_JS, Meter, Page, _tree_cpu_seconds  # noqa: E402
from llamacpp import prompt_ids  # noqa: E402

#: Variant name -> (dot, act) of build_cpu_library_variant.
VARIANTS = {"i16x8": ("i16x8", None), "int8": ("i32x4", "int8"), "int8-i16x8": ("i16x8", "int8")}


def variant_library(gguf: Path, name: str) -> Path:
    """The relaxed-SIMD library of the GGUF's model (``ggml`` mode, as its CPU folder) built as variant ``name``
    (cached by the folder library's key and the variant)."""
    from webllm_widget.cache import cache_dir
    from webllm_widget.compile.arch import registry
    from webllm_widget.compile.checkpoint import open_checkpoint
    from webllm_widget.compile.cpu import build_cpu_library_variant, library_key
    from webllm_widget.compile.quant.ggml import ggml_quantization

    ckpt = open_checkpoint(gguf)
    cfg = registry.config_from_dict(ckpt.config)
    quant = ggml_quantization(ckpt, cfg, device="cpu")
    out = cache_dir() / "bench" / "cpu-variants" / f"{library_key(cfg, quant, 'relaxed-simd')}-{name}.wasm"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        dot, act = VARIANTS[name]
        build_cpu_library_variant(cfg, quant, out, dot=dot, act=act)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen0.5b", help="qwen0.5b (bench/shapes.py) or builtin (SmolLM2 GGUF)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--js-flags", default="", help="V8 flags for the page, e.g. --no-enable-avx-vnni")
    ap.add_argument("--quiet-wait", type=float, default=60.0)
    ap.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = ap.parse_args(argv)

    from cpu_page import serve_cpu_model
    from webllm_widget import models
    from webllm_widget.compile.pipeline import build_model_folder

    if args.model == "qwen0.5b":
        from shapes import qwen05b_shaped_gguf

        gguf = qwen05b_shaped_gguf()
        folder = build_model_folder(gguf, device="cpu")
    else:
        gguf, folder = models.default_gguf(progress=False), models.default(device="cpu")
    libs = {"simd128": folder / "model.wasm", "relaxed-simd": folder / "model-relaxed-simd.wasm"}
    for name in filter(None, args.variants.split(",")):
        libs[name] = variant_library(gguf, name)
    ids = prompt_ids(args.prompt)
    runs: dict = {name: [] for name in libs}
    quiet = wait_quiet(args.quiet_wait)
    t0 = time.perf_counter()
    with Page(args.js_flags) as pg:
        js = lambda body, arg=None: pg.page.evaluate(f"async (arg) => {{ {body} }}", arg)  # noqa: E731
        own = lambda: _tree_cpu_seconds(pg.browser.profile)  # noqa: E731
        bases = {name: serve_cpu_model(pg.server, f"variant-{name}", lib, folder) for name, lib in libs.items()}
        for r in range(args.rounds):
            for name in (list(libs) if r % 2 == 0 else list(libs)[::-1]):
                js(LOAD_JS, {"base": bases[name], "lib": "model.wasm", "context": args.prompt + args.decode + 16})
                js(PREFILL_JS, {"prompt": ids[:8]})  # first call: compiles and warms up
                with Meter(own) as mp:
                    prefill_ms = js(PREFILL_JS, {"prompt": ids})
                with Meter(own) as md:
                    dec = js(DECODE_JS, {"decode": args.decode})
                runs[name].append({"prefill_tok_s": args.prompt * 1000 / prefill_ms,
                                   "decode_tok_s": args.decode * 1000 / sum(dec["steps"]),
                                   "prefill_tok_s_per_cpu_s": args.prompt / max(mp.cpu, 1e-9),
                                   "decode_tok_s_per_cpu_s": args.decode / max(md.cpu, 1e-9),
                                   "other_busy_cores": round((mp.others * mp.wall + md.others * md.wall)
                                                             / (mp.wall + md.wall), 2),
                                   "tokens": dec["out"]})
                js("globalThis.__m.dispose(); globalThis.__m = null;")
    keys = ("prefill_tok_s", "decode_tok_s", "prefill_tok_s_per_cpu_s", "decode_tok_s_per_cpu_s", "other_busy_cores")
    builds = {name: {**{k: {"median": round(statistics.median(x[k] for x in rs), 2),
                            "runs": [round(x[k], 2) for x in rs]} for k in keys},
                     "library": str(libs[name]), "greedy_tokens": rs[0]["tokens"]} for name, rs in runs.items()}
    base = builds["simd128"]
    ratios = {name: {k: round(b[k]["median"] / base[k]["median"], 3) for k in ("prefill_tok_s", "decode_tok_s")}
              for name, b in builds.items()}
    flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    result = {"model": json.loads((folder / "manifest.json").read_text()).get("model_id"),
              "settings": {k: getattr(args, k) for k in ("rounds", "prompt", "decode", "js_flags")},
              "host_avx_vnni": " avx_vnni" in flags, "quiet_before": quiet,
              "builds": builds, "ratios_vs_simd128": ratios, "wall_s": round(time.perf_counter() - t0, 1)}
    # one file per model and V8 flags: cpu_variants_qwen0.5b.json, cpu_variants_builtin_no_enable_avx_vnni.json, ...
    tag = "_".join(filter(None, [args.model, re.sub(r"[^a-z0-9]+", "_", args.js_flags.lower()).strip("_")]))
    path = write_result(f"cpu_variants_{tag}", result, Path(args.out) if args.out else None)
    for name, b in builds.items():
        print(f"{name:14s} prefill {b['prefill_tok_s']['median']:7.1f} tok/s  decode {b['decode_tok_s']['median']:6.1f} "
              f"tok/s  (vs SIMD128 {ratios[name]['prefill_tok_s']:.2f}x / {ratios[name]['decode_tok_s']:.2f}x)")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
