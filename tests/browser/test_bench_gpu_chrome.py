"""bench/gpu/chrome_run.py, the GPU benchmark's Chromium driver, run on this machine (SwiftShader) on the tiny model."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_device  # noqa: E402


@pytest.mark.browser
def test_chrome_driver_runs_the_engine_in_chromium_and_reports_speeds_dispatches_and_cpu(tiny_folder, tmp_path):
    """bench/gpu/chrome_run.py on this machine (SwiftShader), in the layout the GPU machine unpacks: the page
    loads the model through the widget's runner, generates, and posts speeds, dispatch counts and CPU by process."""
    import os
    import shutil

    sys.path.insert(0, str(ROOT / "bench" / "gpu"))
    import chrome_run

    from webllm_widget.headless.engine import STATIC

    job, paths = gpu_device.model_job([16], 4, 1, tiny_folder)
    stage = tmp_path / "stage"
    (stage / "files-smoke").mkdir(parents=True)
    for sha, p in paths.items():
        shutil.copyfile(p, stage / "files-smoke" / sha)
    (stage / "manifest.json").write_text(json.dumps({"jobs": {"smoke": {"job": job, "parts": []}}}))
    (stage / "chrome").mkdir()
    os.symlink("/usr/lib/chromium", stage / "chrome" / "chromium")
    os.symlink(STATIC, stage / "chrome" / "static")
    (tmp_path / "staged").mkdir()
    rc = chrome_run.main(["--staged", str(tmp_path / "staged"), "--stage", str(stage), "--out", str(tmp_path / "out"),
                          "--flags", "swiftshader", "--job", "smoke", "--timeout", "240", "--kernels",
                          "--kernel-runs", "1", "--upstream-dispatch"])
    raw = json.loads((tmp_path / "out" / "chrome_raw.json").read_text())
    assert rc == 0, raw.get("result", {}).get("error")
    r = raw["result"]
    assert r["adapter_info"]["architecture"] == "swiftshader"
    p = r["prompts"]["16"]
    assert p["completion_tokens"] > 0 and p["decode_tok_s"]["median"] > 0 and p["prefill_tok_s"]["median"] > 0
    assert p["dispatches"] > p["completion_tokens"]  # at least one compute dispatch per generated token
    assert p["cpu_s_by_type"]["gpu-process"]["median"] > 0 and p["cpu_s_by_type"]["renderer"]["median"] > 0
    # the engine's batched dispatch, then (--upstream-dispatch) the same job with tvmjs's own, same dispatch count
    assert r["load"]["dispatch"] == "batched" and p["dispatch_stats"]["launches"] > 0
    up = raw["variants"]["upstream-dispatch"]
    assert up["error"] is None and up["load"]["dispatch"].startswith("upstream"), up
    assert up["prompts"]["16"]["dispatches"] == p["dispatches"]
    assert up["prompts"]["16"]["decode_tok_s"]["median"] > 0
    e = gpu_device.chrome_entry(raw, 4000.0, 4800, {"params_bytes": 1_000_000})
    row = e["per_prompt"]["16"]
    assert row["dispatches_per_token"] == pytest.approx(p["dispatches"] / p["completion_tokens"], abs=0.1)
    assert row["fraction_of_bound"] == pytest.approx(p["decode_tok_s"]["median"] / row["bound_tok_s"], rel=1e-3)
    # --kernels: the same job again with every compute pass timed on the GPU, grouped into the engine's steps
    k = raw["kernels"]
    assert k["error"] is None and k["timestamps"] is True, k.get("error")
    kp = k["per_prompt"]["16"]
    assert kp["decode_steps"] >= 1
    assert kp["steps_per_run"][0] >= k["prompts"]["16"]["completion_tokens"]  # a step per generated token at least
    d = kp["decode"]
    assert d["gpu_busy_ms"]["mean"] > 0 and d["wall_ms"]["mean"] > 0
    assert d["gpu_busy_ms"]["mean"] <= d["gpu_span_ms"]["mean"] * 1.0001  # SwiftShader runs passes one after another
    assert d["timed_passes"]["mean"] >= d["dispatches"]["mean"] * 0.99  # every dispatch sits in a timed pass
    top = kp["top_kernels"]
    assert top and all(t["kernel"] != "?" for t in top)
    assert top[0]["ms_per_step"] >= top[-1]["ms_per_step"] and sum(t["share_of_gpu"] for t in top) <= 1.0001
