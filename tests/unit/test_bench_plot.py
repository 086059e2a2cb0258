"""The benchmark plotter draws PNGs and the README section from results of the documented shape."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))


def test_plot_draws_pngs_and_a_readme_section_without_touching_the_rest(tmp_path):
    import plot

    res = tmp_path / "results"
    res.mkdir()
    summ = {"median": 2.0, "min": 1.0, "max": 3.0, "runs": [1.0, 2.0, 3.0]}
    machine = {"cpu": "x", "cpus": 2, "mem_gb": 1, "chromium": "c"}
    (res / "channel.json").write_text(json.dumps({
        "machine": machine, "when": "t", "size_bytes": 1 << 20, "runs": 3, "comm": {"MBps": summ},
        "http": {"MBps": summ},
        "latency_ms": {"n": 10, "p50": 1.0, "p90": 2.0, "p99": 3.0}}))
    (res / "decode.json").write_text(json.dumps({
        "machine": machine, "when": "t", "settings": {"runs": 3, "max_tokens": 4},
        "browser": {"ggml": {"adapter": {"vendor": "v", "architecture": "a"}, "prompts": {"32": {
            "prompt_tokens": 32, "prefill_tok_s": summ, "decode_tok_s": summ, "ttft_s": summ}},
            "load_cold": {"s": 1, "bytes_sent": 5}, "load_warm": {"s": 1, "bytes_sent": 0},
            "peak_pss_mb": 1, "peak_rss_mb": 2}},
        "baselines": {"llama.cpp": {"skipped": "not installed"}}}))
    (res / "gpu.json").write_text(json.dumps({
        "when": "t", "gpu": {"name": "GPU-X", "torch": {"copy": {"GBps_median": 1000.0}}},
        "runs": {"model": {"prompts": {"32": {"prompt_tokens": 32, "prefill_tok_s": summ, "decode_tok_s": summ}},
                           "bound": {"32": {"bound_tok_s": 9000.0, "fraction_of_bound": 0.0002}}}},
        "summary": {"per_prompt": {"32": {"dispatches_per_token": 310.0, "us_per_dispatch": 80.0,
                                          "host_cpu_per_wall": 1.05}}}}))
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nintro\n")
    plot.main(["--results", str(res), "--readme", str(readme)])
    assert (res / "channel.png").stat().st_size > 1000 and (res / "decode.png").stat().st_size > 1000
    text = readme.read_text()
    assert text.startswith("# Title\n\nintro\n") and "## Benchmarks" in text and "| ggml" in text
    assert "lent GPU-X" in text
    assert "| Node + Dawn for Node (Vulkan) | 32 | 2.00 (1.00–3.00) | 2.00 (1.00–3.00) | 9,000 | 0.02% | 310 | 80 | 1.05 |" in text
    plot.main(["--results", str(res), "--readme", str(readme)])  # idempotent: one section
    assert readme.read_text().count("## Benchmarks") == 1


def test_gpu_summary_shows_chromes_gpu_busy_time_per_decode_step_and_its_top_kernels():
    import plot

    kern = {"when": "t", "per_prompt": {"32": {
        "step_wall_ms": 19.5, "gpu_busy_ms": 3.25, "gpu_span_ms": 12.0, "timed_decode_tok_s": 50.0, "top_kernels": [
            {"kernel": "matmul_a", "ms_per_step": 1.5, "calls_per_step": 60, "us_per_call": 25.0, "share_of_gpu": 0.46},
            {"kernel": "norm", "ms_per_step": 0.25, "calls_per_step": 61, "us_per_call": 4.1, "share_of_gpu": 0.077}]}}}
    gpu = {"gpu": {"name": "GPU-X"}, "runs": {}, "summary": {"per_prompt": {}, "chrome": {"kernels": kern}}}
    text = "\n".join(plot.gpu_summary(gpu))
    assert "prompt 32: GPU busy 3.25 ms of 19.50 ms per step (span 12.00 ms, 50.0 tok/s while timed)" in text
    assert "| `matmul_a` | 1.500 | 60 | 25.0 | 46.0% |" in text and "| `norm` | 0.250 | 61 | 4.1 | 7.7% |" in text
    assert "timestamp queries" not in "\n".join(plot.gpu_summary(dict(gpu, summary={"per_prompt": {}})))
