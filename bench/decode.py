"""Benchmark: prefill/decode speed, time to first token, load time and browser memory of the widget's engine.

Loads a model folder in headless WebGPU Chromium through the engine the Chat widget uses (web-llm in a
Worker, driven by ``webllm_widget.headless.engine.HeadlessEngine``), then for each prompt length runs greedy
generation of ``--max-tokens`` tokens (``ignore_eos``: fixed length) ``--runs`` times, resetting the KV
cache before each. By default the model is what ``Chat(device="webgpu")`` sends (both WebGPU libraries;
the page picks "fallback" on a software adapter such as SwiftShader), so the numbers are what a user gets
on this adapter; the JSON records the schedule the page chose. Load is timed cold (fresh browser profile: empty Cache Storage, every file sent)
and warm (a new browser on the same profile). Baselines in the same run, on the same prompts: the numpy
float32 reference (tests/helpers/reference.py) and llama.cpp through ``llama-cpp-python`` when it is installed.

    python bench/decode.py                                  # built-in SmolLM2, lossless GGUF mode + q4f32_1 + q0f32
    python bench/decode.py --schedule fallback              # force one library instead of the page's pick
    python bench/decode.py --prompts 32,128,512 --max-tokens 32 --runs 5 --quant ggml   # more, where time allows
    python bench/decode.py --model path/to/folder           # any web-llm model folder (no baselines)

Writes ``decode.json``. Speeds are medians over runs with min/max beside them.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_result  # noqa: E402
from procmem import TreeMemory  # noqa: E402
from webllm_widget._aio import run as run_async  # asyncio.run fails under Playwright's sync API

#: Plain English filler for prompts of a chosen token length.
FILLER = ("The river runs past the old mill and under the stone bridge, where children watch the boats "
          "carry apples, wool and timber down to the market town on the coast. ")


def summary(xs: list[float]) -> dict:
    xs = [x for x in xs if x is not None]
    if not xs:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs}


class Prompts:
    """Token-exact filler text from the model's own tokenizer (tokenizer.json in the folder)."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.ids = self.tok.encode(FILLER * 200, add_special_tokens=False).ids

    def text(self, n_tokens: int) -> str:
        """Text whose encoding is ``n_tokens`` tokens (decode of the first n filler ids)."""
        return self.tok.decode(self.ids[:max(1, n_tokens)])

    def template_tokens(self, folder: Path) -> int:
        """Tokens the chat template adds around one user message (system prompt, role tags, reply header)."""
        import json

        from webllm_widget.compile.chat_config import render_prompt

        conv = json.loads((folder / "mlc-chat-config.json").read_text())["conv_template"]
        x = self.text(1)
        full = render_prompt(conv, [("user", x), ("assistant", None)])
        return len(self.tok.encode(full, add_special_tokens=False).ids) - len(self.tok.encode(x, add_special_tokens=False).ids)

    def token_ids(self, n_tokens: int) -> list[int]:
        return list(self.ids[:n_tokens])


# -- the browser engine ---------------------------------------------------------------------------------

def picked_model(q: str | None):
    """What ``Chat(device="webgpu")`` sends for the built-in model in mode ``q``: both WebGPU libraries
    (schedule "auto" and, as ``webgpu_fallback``, "fallback"; same weight files), the page picks one.

    For the default mode (``ggml``) this is ``devices.model_spec`` itself; other modes are composed the same
    way from their two builds (a user reaches them by building the folder, which keeps one library)."""
    from webllm_widget import models
    from webllm_widget.models.devices import model_spec
    from webllm_widget.models.folder import FolderModel, folder_model

    if q in (None, "ggml"):
        spec, paths = model_spec(None, "webgpu")
        return FolderModel(models.default(), spec, paths)
    auto = folder_model(models.default(quantization=q, schedule="auto"))
    fb = folder_model(models.default(quantization=q, schedule="fallback"))
    spec = dict(auto.spec, device="webgpu", schedule="auto",
                webgpu_fallback=dict(fb.spec, device="webgpu", schedule="fallback"))
    return FolderModel(auto.folder, spec, {**auto.paths, **fb.paths})


async def _browser_session(folder: Path, profile: Path, prompts: Prompts, lengths: list[int], max_tokens: int,
                           runs: int, *, measure: bool, model=None) -> dict:
    from webllm_widget.headless.engine import HeadlessEngine
    from webllm_widget.models.folder import folder_model

    model = model or folder_model(folder)
    out: dict = {}
    with TreeMemory(str(profile)) as mem:
        t0 = time.perf_counter()
        async with HeadlessEngine(profile_dir=profile) as eng:
            out["browser_start_s"] = time.perf_counter() - t0
            out["adapter"] = eng.adapter
            t1 = time.perf_counter()
            info = await eng.load(model)
            out["load_s"] = time.perf_counter() - t1
            out["load_s_page"] = info.get("load_s")
            out["bytes_installed"] = info.get("bytes_installed")
            # which library the page chose (schedule "fallback" on a software adapter) and why
            out["schedule"] = info.get("schedule")
            out["loaded_model"] = info.get("model")  # the folder id the page loaded (the fallback build's on SwiftShader)
            out["device_reason"] = info.get("device_reason")
            chosen = model.spec.get("webgpu_fallback") if info.get("schedule") == "fallback" else None
            out["model_bytes"] = sum(f["size"] for f in chosen["files"]) if chosen else model.total_bytes
            if measure:
                overhead = prompts.template_tokens(folder)
                out["template_tokens"] = overhead
                per_len = {}
                for n in tqdm_iter(lengths, "browser prompts"):
                    content = prompts.text(max(1, n - overhead))
                    rows = []
                    for _ in range(runs):
                        await eng.reset()
                        t = time.perf_counter()
                        r = await eng.generate([{"role": "user", "content": content}], max_tokens=max_tokens,
                                               temperature=0, ignore_eos=True)
                        u = r["usage"]
                        rows.append({"wall_s": time.perf_counter() - t, "prompt_tokens": u["prompt_tokens"],
                                     "completion_tokens": u["completion_tokens"],
                                     "prefill_tok_s": u.get("prefill_tokens_per_s"),
                                     "decode_tok_s": u.get("decode_tokens_per_s"),
                                     "ttft_s": u.get("time_to_first_token_s"),
                                     "finish_reason": r.get("finish_reason")})
                    per_len[str(n)] = {
                        "prompt_tokens": rows[0]["prompt_tokens"], "completion_tokens": rows[0]["completion_tokens"],
                        "finish_reason": rows[0]["finish_reason"],
                        "prefill_tok_s": summary([r["prefill_tok_s"] for r in rows]),
                        "decode_tok_s": summary([r["decode_tok_s"] for r in rows]),
                        "ttft_s": summary([r["ttft_s"] for r in rows]),
                        "wall_s": summary([r["wall_s"] for r in rows]),
                    }
                out["prompts"] = per_len
        mem.sample()
    out["peak_rss_mb"], out["peak_pss_mb"] = mem.peak_rss_mb, mem.peak_pss_mb
    return out


def tqdm_iter(xs, desc):
    from tqdm import tqdm

    return tqdm(xs, desc=desc, leave=False, file=sys.stderr)


def bench_browser(folder: Path, prompts: Prompts, lengths: list[int], max_tokens: int, runs: int,
                  model=None) -> dict:
    """Cold load + measured runs in one browser, then a warm load in a new browser on the same profile.
    ``model``: a FolderModel to load instead of ``folder`` as is (e.g. :func:`picked_model`)."""
    with tempfile.TemporaryDirectory(prefix="wlw-bench-profile-") as profile:
        cold = run_async(_browser_session(folder, Path(profile), prompts, lengths, max_tokens, runs, measure=True,
                                          model=model))
        warm, warm_error = None, None
        for attempt in range(2):  # a loaded machine can miss the page's start-up deadline once
            try:
                warm = run_async(_browser_session(folder, Path(profile), prompts, [], max_tokens, runs, measure=False,
                                                  model=model))
                break
            except Exception as e:  # noqa: BLE001 - keep the cold numbers whatever happens here
                warm_error = f"{type(e).__name__}: {str(e)[:500]}"
                print(f"   warm load attempt {attempt + 1} failed: {warm_error}", file=sys.stderr)
    res = {k: v for k, v in cold.items() if k not in ("load_s", "load_s_page", "bytes_installed")}
    res["load_cold"] = {"s": cold["load_s"], "page_s": cold["load_s_page"], "bytes_sent": cold["bytes_installed"]}
    if warm is None:
        res["load_warm"] = {"s": None, "page_s": None, "bytes_sent": None, "error": warm_error}
        warm = {"peak_rss_mb": 0, "peak_pss_mb": 0}
    else:
        res["load_warm"] = {"s": warm["load_s"], "page_s": warm["load_s_page"], "bytes_sent": warm["bytes_installed"]}
    res["peak_rss_mb"] = max(cold["peak_rss_mb"], warm["peak_rss_mb"])
    res["peak_pss_mb"] = max(cold["peak_pss_mb"], warm["peak_pss_mb"])
    return res


# -- CPU baselines ----------------------------------------------------------------------------------------

def bench_numpy(gguf: Path, prompts: Prompts, lengths: list[int], max_tokens: int, runs: int) -> dict:
    """The numpy float32 forward pass (tests/helpers/reference.py) on the dequantized GGUF weights."""
    sys.path.insert(0, str(ROOT / "tests" / "helpers"))
    import numpy as np
    from reference import LlamaReference, load_weights

    from webllm_widget.compile.checkpoint import open_checkpoint

    ckpt = open_checkpoint(gguf)
    t = time.perf_counter()
    ref = LlamaReference(load_weights(ckpt), ckpt.config)
    res: dict = {"load_s": time.perf_counter() - t, "dtype": "float32", "prompts": {}}
    for n in tqdm_iter(lengths, "numpy prompts"):
        pre, dec = [], []
        for _ in range(runs):
            ref.reset()
            ids = prompts.token_ids(n)
            t = time.perf_counter()
            logits = ref.forward(ids)
            pre.append(n / (time.perf_counter() - t))
            tok = int(np.argmax(logits[-1]))
            t = time.perf_counter()
            for _ in range(max_tokens):
                tok = int(np.argmax(ref.forward([tok])[-1]))
            dec.append(max_tokens / (time.perf_counter() - t))
        res["prompts"][str(n)] = {"prompt_tokens": n, "prefill_tok_s": summary(pre), "decode_tok_s": summary(dec)}
    return res


def bench_llama_cpp(gguf: Path, prompts: Prompts, lengths: list[int], max_tokens: int, runs: int,
                    threads: int) -> dict:
    """llama.cpp (llama-cpp-python) on the same GGUF file; skipped with a note when it is not installed."""
    try:
        import llama_cpp
    except ImportError as e:
        return {"skipped": f"llama-cpp-python is not installed ({e}); `pip install llama-cpp-python` compiles "
                           "llama.cpp from source (needs cmake and a C++ compiler)"}
    import numpy as np

    t = time.perf_counter()
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=max(lengths) + max_tokens + 16, n_threads=threads,
                          n_threads_batch=threads, n_batch=512, logits_all=False, verbose=False)
    res: dict = {"version": getattr(llama_cpp, "__version__", "?"), "threads": threads,
                 "load_s": time.perf_counter() - t, "prompts": {}}
    for n in tqdm_iter(lengths, "llama.cpp prompts"):
        pre, dec = [], []
        for _ in range(runs):
            llm.reset()
            llm._ctx.kv_cache_clear() if hasattr(llm, "_ctx") and hasattr(llm._ctx, "kv_cache_clear") else None
            ids = prompts.token_ids(n)
            t = time.perf_counter()
            llm.eval(ids)
            pre.append(n / (time.perf_counter() - t))
            t = time.perf_counter()
            for _ in range(max_tokens):
                tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
                llm.eval([tok])
            dec.append(max_tokens / (time.perf_counter() - t))
        res["prompts"][str(n)] = {"prompt_tokens": n, "prefill_tok_s": summary(pre), "decode_tok_s": summary(dec)}
    return res


# -- driver -----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a web-llm model folder (default: the built-in SmolLM2, built as needed)")
    ap.add_argument("--quant", default="ggml,q4f32_1,q0f32",
                    help="built-in model's modes to compare; the first gets every prompt length")
    ap.add_argument("--prompts", default="32,128",
                    help="prompt lengths in tokens (add 512 where prefill is fast enough: 32,128,512)")
    ap.add_argument("--compare-prompts", default="32", help="prompt lengths for the other modes")
    ap.add_argument("--max-tokens", type=int, default=8, help="output tokens per run (M)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--schedule", default="pick",
                    help="'pick' (default): what a user gets, Chat(device='webgpu')'s spec with both libraries, the "
                         "page picks for its adapter; or one forced schedule (auto|gpu|fallback)")
    ap.add_argument("--baselines", default="numpy,llama.cpp", help="comma list, or 'none'")
    ap.add_argument("--llama-threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    lengths = [int(x) for x in args.prompts.split(",") if x]
    compare = [int(x) for x in args.compare_prompts.split(",") if x]
    t_all = time.perf_counter()
    result: dict = {"settings": {"prompts": lengths, "compare_prompts": compare, "max_tokens": args.max_tokens,
                                 "runs": args.runs, "schedule": args.schedule, "temperature": 0,
                                 "ignore_eos": True}, "browser": {}}
    if args.schedule == "pick" and not args.model:
        result["settings"]["what"] = ("the built-in model as Chat(device='webgpu') sends it (devices.model_spec: "
                                      "'auto' library + 'fallback' library), library picked by the page for "
                                      "its adapter; browser.<mode>.schedule says which one ran")
    gguf = None
    if args.model:
        modes = {Path(args.model).name: lambda: (Path(args.model), None)}
    else:
        from webllm_widget import models

        gguf = models.default_gguf()

        def builder(q: str):
            def build() -> Path:
                t = time.perf_counter()
                if args.schedule == "pick":
                    m = picked_model(q)
                    result.setdefault("build_s", {})[q] = round(time.perf_counter() - t, 1)
                    return m.folder, m
                folder = models.default(quantization=None if q == "ggml" else q, schedule=args.schedule, progress=True)
                result.setdefault("build_s", {})[q] = round(time.perf_counter() - t, 1)
                return folder, None
            return build

        # Built one at a time just before use: the first mode's numbers come in while later ones may still build.
        modes = {q: builder(q) for q in args.quant.split(",") if q}
    prompts = None
    for i, (name, build) in enumerate(modes.items()):
        try:
            folder, model = build()
            prompts = prompts or Prompts(folder)
            print(f"== browser: {name} ({folder.name})", file=sys.stderr)
            result["browser"][name] = bench_browser(folder, prompts, lengths if i == 0 else compare,
                                                    args.max_tokens, args.runs, model=model)
            result["browser"][name]["folder"] = folder.name
        except Exception as e:  # noqa: BLE001 - one failing mode must not lose the others' numbers
            result["browser"][name] = {"error": f"{type(e).__name__}: {str(e)[:2000]}"}
            print(f"   failed: {type(e).__name__}: {str(e)[:300]}", file=sys.stderr)
    if prompts is None:
        raise SystemExit("no model folder could be built or loaded; see the errors above")
    wanted = set() if args.baselines == "none" else set(args.baselines.split(","))
    result["baselines"] = {}
    if gguf is not None and "numpy" in wanted:
        print("== numpy reference", file=sys.stderr)
        result["baselines"]["numpy"] = bench_numpy(gguf, prompts, lengths, args.max_tokens, args.runs)
    if gguf is not None and "llama.cpp" in wanted:
        print("== llama.cpp", file=sys.stderr)
        try:
            result["baselines"]["llama.cpp"] = bench_llama_cpp(gguf, prompts, lengths, args.max_tokens, args.runs,
                                                               args.llama_threads)
        except Exception as e:  # noqa: BLE001
            result["baselines"]["llama.cpp"] = {"skipped": f"{type(e).__name__}: {str(e)[:500]}"}
    result["wall_s"] = round(time.perf_counter() - t_all, 1)
    path = write_result("decode", result, args.out)
    for name, r in result["browser"].items():
        for n, p in r.get("prompts", {}).items():
            print(f"{name:10s} [{r.get('schedule')}] prompt {n:>4s}: prefill {p['prefill_tok_s']['median'] or 0:.2f} tok/s, "
                  f"decode {p['decode_tok_s']['median'] or 0:.2f} tok/s, ttft {p['ttft_s']['median'] or 0:.2f} s")
    print(f"-> {path}")
    return result


if __name__ == "__main__":
    main()
