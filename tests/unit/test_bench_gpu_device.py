"""bench/gpu_device.py's local pieces: the bandwidth bound it writes beside the GPU run, its profile summary, and
that `make bench` passes over it on a machine without an NVIDIA GPU. (The GPU run itself needs a GPU machine.)"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_device  # noqa: E402


def _raw(tmp_path: Path, copy_gbps: float, params: int, kv: int, prompts: dict) -> Path:
    raw = {
        "manifest": {"node_version": "v20", "jobs": {"model": {"job": {"spec": {"id": "m"}},
                                                             "weights": {"params_bytes": params,
                                                                         "kv_bytes_per_position": kv}}}},
        "nvidia_smi": {"name": "NVIDIA H200"},
        "torch": {"name": "NVIDIA H200", "copy": {"GBps_median": copy_gbps}},
        "jobs": {"model": {"rc": 0, "result": {"load": {"schedule": "auto"}, "prompts": prompts}}},
    }
    p = tmp_path / "raw" / "gpu_raw.json"
    p.parent.mkdir()
    p.write_text(json.dumps(raw))
    return p


def test_collect_puts_decode_beside_the_bandwidth_bound(tmp_path):
    prompts = {"32": {"prompt_tokens": 32, "completion_tokens": 64, "decode_tok_s": {"median": 50.0},
                      "prefill_tok_s": {"median": 900.0}, "cpu_s": {"median": 3.0}, "wall_s": {"median": 2.0}},
               "512": {"prompt_tokens": 512, "completion_tokens": 64, "decode_tok_s": {"median": 40.0},
                       "prefill_tok_s": {"median": 1300.0}, "cpu_s": {"median": 1.0}, "wall_s": {"median": 4.0}}}
    params, kv, gbps = 100_000_000, 40_000, 4000.0
    path = gpu_device.collect(_raw(tmp_path, gbps, params, kv, prompts), tmp_path / "out")
    res = json.loads(path.read_text())
    assert res["summary"]["gpu"] == "NVIDIA H200"
    assert res["summary"]["datasheet_GBps"] == gpu_device.DATASHEET_GBPS["H200"]
    for n, p in prompts.items():
        b = res["runs"]["model"]["bound"][n]
        ctx = p["prompt_tokens"] + p["completion_tokens"] / 2  # mean context while decoding
        assert b["bytes_per_token"] == round(params + kv * ctx)
        assert b["bound_tok_s"] == pytest.approx(gbps * 1e9 / (params + kv * ctx), rel=1e-3)
        assert b["fraction_of_bound"] == pytest.approx(p["decode_tok_s"]["median"] / b["bound_tok_s"], rel=1e-3)
        s = res["summary"]["per_prompt"][n]
        assert s["host_cpu_per_wall"] == pytest.approx(p["cpu_s"]["median"] / p["wall_s"]["median"], abs=0.01)
        assert s["prefill_tok_s"] == p["prefill_tok_s"]["median"]
    # a longer context reads more KV cache per token: a lower bound
    assert res["runs"]["model"]["bound"]["512"]["bound_tok_s"] < res["runs"]["model"]["bound"]["32"]["bound_tok_s"]



def _chrome_raw(tmp_path: Path, name: str, decode: dict, variants: dict | None = None) -> Path:
    def prompts(dec):
        return {n: {"prompt_tokens": 32, "completion_tokens": 100, "decode_tok_s": {"median": d, "min": d, "max": d},
                    "prefill_tok_s": {"median": 800.0, "min": 800.0, "max": 800.0}, "wall_s": {"median": 2.0},
                    "cpu_s": {"median": 1.0},
                    "cpu_s_by_type": {"renderer": {"median": 0.6}, "gpu-process": {"median": 0.4}},
                    "dispatches": 31_000} for n, d in dec.items()}
    raw = {"when": name, "chromium": "Chromium 156", "flag_set": "vulkan-no-compositing",
           "result": {"adapter_info": {"vendor": "nvidia", "is_fallback": False}, "prompts": prompts(decode)},
           "variants": {k: {"flags": ["--x"], "prompts": prompts(v)} for k, v in (variants or {}).items()}}
    p = tmp_path / f"{name}.json"
    p.write_text(json.dumps(raw))
    return p


def test_collect_puts_chromes_decode_beside_nodes_with_repeats_and_variant_speedups(tmp_path):
    node = {"32": {"prompt_tokens": 32, "completion_tokens": 100, "decode_tok_s": {"median": 40.0},
                   "prefill_tok_s": {"median": 900.0}, "cpu_s": {"median": 2.0}, "wall_s": {"median": 2.0}}}
    first = _chrome_raw(tmp_path, "a", {"32": 50.0})
    again = _chrome_raw(tmp_path, "b", {"32": 48.0}, {"nochecks": {"32": 60.0}})
    path = gpu_device.collect(_raw(tmp_path, 4000.0, 100_000_000, 40_000, node), tmp_path / "out", [first, again])
    res = json.loads(path.read_text())
    c = res["summary"]["chrome"]["per_prompt"]["32"]
    assert c["decode_tok_s"] == 50.0 and c["chrome_over_node_decode"] == pytest.approx(50.0 / 40.0)
    assert c["cpu_per_wall_by_type"] == {"renderer": 0.3, "gpu-process": 0.2}
    assert c["us_per_dispatch"] == pytest.approx(1e6 / 50.0 / 310.0, abs=0.1)
    assert c["fraction_of_bound"] == pytest.approx(50.0 / c["bound_tok_s"], rel=1e-3)
    assert res["chrome"]["repeats"] == [{"32": {"decode_tok_s": 48.0, "prefill_tok_s": 800.0}}]
    (v,) = res["chrome"]["variants"]
    assert v["name"] == "nochecks" and v["speedup"]["32"] == pytest.approx(60.0 / 48.0)  # against its own call's run

def test_kernel_summary_takes_decode_steps_per_run_and_collect_puts_gpu_busy_beside_wall(tmp_path):
    """chrome_run.kernel_summary: steps fall in a run by their end time, the first of each run is the prefill;
    collect carries the per-step GPU busy / wall and the top kernels into gpu.json's chrome summary."""
    sys.path.insert(0, str(ROOT / "bench" / "gpu"))
    import chrome_run

    def step(t, wall, busy_ns, kern):
        return {"epoch_ms": t * 1e3, "wall_ms": wall, "encode_ms": 1.0, "dispatches": 3, "submits": 1,
                "timed_passes": 3, "gpu_busy_ms": busy_ns / 1e6, "gpu_span_ms": busy_ns / 1e6 + 0.5, "kernels": kern}
    pre = {"matmul_pre": [9_000_000, 3]}
    dec = {"matmul": [1_500_000, 2], "norm": [500_000, 1]}
    segs = [step(5.0, 9.0, 9e6, pre)]  # outside every window (an earlier run)
    for a in (10.0, 20.0):
        segs += [step(a + 0.1, 50.0, 9e6, pre), step(a + 0.2, 20.0, 2e6, dec), step(a + 0.3, 20.0, 2e6, dec)]
    k = chrome_run.kernel_summary(segs, {"32": {"windows": [[10.0, 11.0], [20.0, 21.0]]}}, {"timestamps": True}, {})
    q = k["per_prompt"]["32"]
    assert q["steps_per_run"] == [3, 3] and q["decode_steps"] == 4
    assert q["decode"]["gpu_busy_ms"]["mean"] == pytest.approx(2.0) and q["gpu_busy_share_of_wall"] == pytest.approx(0.1)
    assert q["prefill"]["gpu_busy_ms"]["mean"] == pytest.approx(9.0)
    assert [t["kernel"] for t in q["top_kernels"]] == ["matmul", "norm"]
    assert q["top_kernels"][0]["share_of_gpu"] == pytest.approx(0.75) and q["top_kernels"][0]["us_per_call"] == 750.0

    node = {"32": {"prompt_tokens": 32, "completion_tokens": 100, "decode_tok_s": {"median": 40.0},
                   "prefill_tok_s": {"median": 900.0}, "cpu_s": {"median": 2.0}, "wall_s": {"median": 2.0}}}
    first = _chrome_raw(tmp_path, "a", {"32": 50.0})
    withk = json.loads(first.read_text())
    withk["kernels"] = k
    first.write_text(json.dumps(withk))
    res = json.loads(gpu_device.collect(_raw(tmp_path, 4000.0, 100_000_000, 40_000, node), tmp_path / "out",
                                        [first]).read_text())
    s = res["summary"]["chrome"]["kernels"]["per_prompt"]["32"]
    assert s["step_wall_ms"] == pytest.approx(20.0) and s["gpu_busy_ms"] == pytest.approx(2.0)
    assert s["top_kernels"][0]["kernel"] == "matmul" and res["chrome"]["kernels"]["per_prompt"]["32"]["decode_steps"] == 4


def test_profile_summary_gives_self_time_by_function(tmp_path):
    prof = {"nodes": [{"id": 1, "callFrame": {"functionName": "(root)", "url": "", "lineNumber": -1}},
                      {"id": 2, "callFrame": {"functionName": "(idle)", "url": "", "lineNumber": -1}},
                      {"id": 3, "callFrame": {"functionName": "dispatch", "url": "file:///x/engine.cjs", "lineNumber": 7}}],
            "samples": [2, 3, 3, 3, 2], "timeDeltas": [100, 300, 300, 200, 100]}
    p = tmp_path / "a.cpuprofile"
    p.write_text(json.dumps(prof))
    s = gpu_device.profile_summary(p)
    assert s["total_s"] == pytest.approx(1000 / 1e6)
    assert s["idle_share"] == pytest.approx(0.2)
    assert s["top"][0] == {"fn": "dispatch engine.cjs:7", "share": 0.8, "s": 0.001}


@pytest.mark.skipif(gpu_device.has_gpu(), reason="this machine has an NVIDIA GPU: make bench runs the GPU benchmark")
def test_gpu_benchmark_is_skipped_without_a_gpu():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_device.py"), "run", "--if-gpu"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "no NVIDIA GPU" in r.stdout
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_device.py"), "run"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1


def test_collect_browser_only_puts_batched_dispatch_beside_upstream_and_the_new_library_beside_the_earlier(tmp_path):
    """A probe-only gpu_raw.json (no Node run), a Chromium run with its upstream-dispatch variant, and the baseline
    job's run (another library, same call): the summary compares each within its own call."""
    from plot import gpu_summary

    raw = json.loads(_raw(tmp_path, 4000.0, 100_000_000, 40_000, {}).read_text())
    raw["jobs"] = {}
    raw["manifest"]["jobs"]["baseline"] = {"job": {"spec": {"id": "m-baseline", "lib": "model.wasm", "files": [
        {"name": "model.wasm", "sha256": "ab" * 32}]}}, "shares": "model"}
    (tmp_path / "raw" / "gpu_raw.json").write_text(json.dumps(raw))
    new = _chrome_raw(tmp_path, "new", {"32": 90.0}, {"upstream-dispatch": {"32": 60.0}})
    old = _chrome_raw(tmp_path, "old", {"32": 80.0})
    c = json.loads(old.read_text())
    c["result"]["prompts"]["32"]["prefill_tok_s"] = {"median": 400.0, "min": 400.0, "max": 400.0}
    old.write_text(json.dumps(c))
    path = gpu_device.collect(tmp_path / "raw" / "gpu_raw.json", tmp_path / "out", [new], old)
    res = json.loads(path.read_text())
    d = res["summary"]["chrome"]["dispatch"]["per_prompt"]["32"]
    assert d == {"batched_decode_tok_s": 90.0, "upstream_decode_tok_s": 60.0, "batched_over_upstream": 1.5}
    vs = res["summary"]["chrome_vs_baseline_library"]["32"]
    assert vs["prefill_new_over_baseline"] == pytest.approx(800.0 / 400.0)
    assert vs["decode_new_over_baseline"] == pytest.approx(90.0 / 80.0)
    assert res["chrome_baseline"]["library_sha256"] == "ab" * 32
    assert res["chrome"]["per_prompt"]["32"]["bound_tok_s"]  # weights from the manifest without a Node run
    text = "\n".join(gpu_summary(res))
    assert "90.0 vs 60.0 (x1.50)" in text and "prefill x2.00, decode x1.12" in text
