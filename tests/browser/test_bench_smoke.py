"""The benchmarks run end to end at tiny sizes and write results of the documented shape (no timing asserts)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))


@pytest.mark.browser
def test_decode_bench_writes_speeds_loads_and_memory_for_a_model_folder(tiny_folder, tmp_path):
    import decode

    decode.main(["--model", str(tiny_folder), "--prompts", "40", "--max-tokens", "3", "--runs", "2",
                 "--baselines", "none", "--out", str(tmp_path)])
    d = json.loads((tmp_path / "decode.json").read_text())
    r = d["browser"][tiny_folder.name]
    assert "error" not in r, r.get("error")
    p = r["prompts"]["40"]
    assert p["prompt_tokens"] >= 30 and p["completion_tokens"] >= 2
    assert len(p["decode_tok_s"]["runs"]) == 2 and p["decode_tok_s"]["median"] > 0
    assert p["prefill_tok_s"]["min"] <= p["prefill_tok_s"]["median"] <= p["prefill_tok_s"]["max"]
    assert r["load_cold"]["bytes_sent"] == r["model_bytes"] and r["load_warm"]["bytes_sent"] == 0
    assert r["peak_pss_mb"] > 0 and r["adapter"]["architecture"]
    assert d["machine"]["cpus"] >= 1


@pytest.mark.browser
def test_kernel_bench_attributes_decode_step_time_to_named_kernels(tiny_folder, tmp_path):
    import kernels

    kernels.main(["--model", str(tiny_folder), "--steps", "2", "--prompt", "4", "--out", str(tmp_path)])
    d = json.loads((tmp_path / "kernels.json").read_text())
    assert d["gpu_errors"] == []
    assert len(d["step_wall_ms"]["runs"]) == 2
    assert d["bound"]["read_GBps"] > 0 and d["bound"]["fma_GFLOPs"] > 0
    if d["timestamps"]:
        names = {k["kernel"] for k in d["kernels"]}
        assert "?" not in names and len(names) >= 3
        assert abs(sum(k["share"] for k in d["kernels"]) - 1) < 0.05  # medians per kernel: close to 1
