"""The CPU benchmark's pieces: the llama.cpp baseline (npm node-llama-cpp) and the CPU table/plot (no timing asserts)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))


@pytest.mark.slow
def test_llama_cpp_baseline_runs_the_gguf_on_one_thread_for_the_requested_tokens():
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("node/npm not installed: the llama.cpp baseline runs through npm node-llama-cpp")
    import llamacpp

    from webllm_widget import models

    # The built-in SmolLM2 GGUF: the test models' GGUFs name a pre-tokenizer this llama.cpp build refuses.
    gguf = models.default_gguf()
    vocab = 49152
    prompts = [llamacpp.prompt_ids(6), llamacpp.prompt_ids(11)]
    r = llamacpp.run(gguf, prompts, decode=5, runs=2, threads=1)
    assert "skipped" not in r, r.get("skipped")
    assert r["threads"] == 1 and r["gpu"] is False and r["version"] == "3.21.1"
    assert sorted(r["prompts"]) == ["11", "6"]
    for n, p in r["prompts"].items():
        assert p["prompt_tokens"] == int(n)
        assert len(p["prefill_tok_s"]["runs"]) == 2 and len(p["decode_tok_s"]["runs"]) == 2
        assert p["decode_tok_s"]["min"] <= p["decode_tok_s"]["median"] <= p["decode_tok_s"]["max"]
        # greedy: the first yield after the prompt plus 5 decoded tokens, all ids of this vocabulary
        toks = p["greedy_tokens_first_run"]
        assert len(toks) == 6 and all(0 <= t < vocab for t in toks)
    # greedy decoding is deterministic: the same prompt gives the same tokens on a second call
    again = llamacpp.run(gguf, prompts[:1], decode=5, runs=1, threads=1)
    assert again["prompts"]["6"]["greedy_tokens_first_run"] == r["prompts"]["6"]["greedy_tokens_first_run"]


def test_plot_puts_the_cpu_path_beside_webgpu_llama_cpp_and_numpy(tmp_path):
    import plot

    res = tmp_path / "results"
    res.mkdir()

    def summ(m):
        return {"median": m, "min": m * 0.9, "max": m * 1.1, "runs": [m * 0.9, m, m * 1.1]}

    machine = {"cpu": "x", "cpus": 2, "mem_gb": 1, "chromium": "c", "loadavg_1_5_15": [0.1, 0.2, 0.3]}
    row = lambda n, pre, dec: {"prompt_tokens": n, "prefill_tok_s": summ(pre), "decode_tok_s": summ(dec)}  # noqa: E731
    cpu_row = {**row(32, 55.0, 31.0), "decode_tok_s_per_cpu_s": summ(33.0), "other_busy_cores": summ(0.1)}
    (res / "cpu.json").write_text(json.dumps({
        "machine": machine, "when": "t", "target_decode_tok_s": 20,
        "settings": {"prompts": [32], "decode_tokens": 32, "runs": 3},
        "quiet_before": {"quiet": True, "busy_cores": 0.1, "waited_s": 3.0, "loadavg_1": 0.5},
        "cpu_path": {"load_s": 1.0, "prompts": {"32": cpu_row}},
        "llama_cpp": {"version": "3.21.1", "threads": 1, "prompts": {"32": row(32, 150.0, 77.0)},
                      "other_busy_cores_whole_run": 0.2},
        "numpy": {"skipped": "numpy reference failed: boom"},
        "ratios_vs_llama_cpp": {"cpu_path": {"32": {"decode": 0.403, "prefill": 0.367}}},
        "models": {"qwen0.5b-shape": {
            "model": "Qwen2.5-0.5B-shape-ggml-cpu", "quantization": "ggml",
            "cpu_path": {"build": "simd128", "prompts": {"32": {**row(32, 20.0, 12.0), "other_busy_cores": summ(0.3)}}},
            "cpu_path_relaxed_simd": {"build": "relaxed-simd", "prompts": {"32": row(32, 15.0, 9.0)}},
            "llama_cpp": {"prompts": {"32": row(32, 40.0, 16.0)}},
            "ratios_vs_llama_cpp": {"cpu_path": {"32": {"decode": 0.75, "prefill": 0.5}},
                                    "cpu_path_relaxed_simd": {"32": {"decode": 0.5625, "prefill": 0.375}}}}}}))
    (res / "decode.json").write_text(json.dumps({
        "machine": machine, "when": "t", "settings": {"runs": 3, "max_tokens": 4},
        "browser": {"ggml": {"adapter": {"vendor": "v", "architecture": "a"},
                             "prompts": {"32": {**row(32, 3.3, 3.0), "ttft_s": summ(9.0)}},
                             "load_cold": {"s": 1, "bytes_sent": 5}, "load_warm": {"s": 1, "bytes_sent": 0},
                             "peak_pss_mb": 1, "peak_rss_mb": 2}},
        "baselines": {"llama.cpp": {"skipped": "llama-cpp-python is not installed"}}}))
    plot.main(["--results", str(res)])
    assert (res / "cpu.png").stat().st_size > 1000
    text = (res / "summary.md").read_text()
    assert "| page CPU (wasm SIMD128, 1 thread) | 32 | 55.00 (49.50–60.50) | 31.00 (27.90–34.10) | 33.00" in text
    assert "| page WebGPU ggml (decode.py) | 32 | 3.30" in text
    assert "| llama.cpp (1 thread) | 32 | 150.00" in text and "| 0.20 |" in text
    assert "numpy: skipped — numpy reference failed: boom" in text
    # the shaped model's table (both page builds beside llama.cpp) and the ratios of the same run
    assert "**qwen0.5b-shape**" in text and "| page CPU (wasm SIMD128, 1 thread) | 32 | 20.00" in text
    assert "| page CPU (wasm relaxed SIMD, 1 thread) | 32 | 15.00" in text
    assert "| qwen0.5b-shape | SIMD128 | 32 | 0.75× | 0.50× |" in text
    assert "| qwen0.5b-shape | relaxed SIMD | 32 | 0.56× | 0.38× |" in text and "| SIMD128 | 32 | 0.40× | 0.37× |" in text
    assert "31.0 tok/s wall clock while other work kept 0.10 cores busy (meets the ≥ 20 tok/s target" in text
    # decode.py's llama-cpp-python row points at the CPU table instead of reporting a skip
    assert "see the CPU table below" in text and "llama-cpp-python is not installed" in text
