"""End to end: notebooks/inside_the_llm.ipynb in a real JupyterLab, in the WebGPU Chromium. The built-in model answers
in a Chat, then its decode step is profiled kernel by kernel on the page's GPU (the Chat's cached files reused), its
kernels' WGSL and TIR read, a roofline drawn, and a schedule experiment on one of its products run and checked
against numpy."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from jupyter import JupyterServer

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "inside_the_llm.ipynb"

pytestmark = [pytest.mark.browser, pytest.mark.jupyter, pytest.mark.slow]


def test_inside_the_llm_notebook_profiles_the_real_model_and_runs_a_schedule_experiment(chromium, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    results = tmp_path / "results.json"
    with JupyterServer(root, app="lab", env={"WEBLLM_WIDGET_NOTEBOOK_RESULTS": str(results)}) as lab:
        page = lab.open_notebook(chromium, NOTEBOOK.name)
        lab.run_all(page)
        data = lab.wait_for_file(results, timeout=1500, page=page)
        errors = lab.console_errors()
        page.close()

    assert "Paris" in data["answer"]  # the model the page profiles is the one that answered
    s = data["summary"]
    # one row per dispatch of the decode step, each with its GPU time (SwiftShader has timestamp-query)
    assert data["n_dispatches"] == data["n_passes"] == s["dispatches"] > 100
    assert data["all_gpu_times"] and s["method"].startswith("timestamp-query")
    # the dispatches' GPU times add up to within 20% of the step's wall time
    assert 0.8 * s["step_ms"] <= s["gpu_ms"] <= 1.02 * s["step_ms"], s
    assert data["wgsl_ok"] and data["tir_ok"] and len(data["kernels"]) == s["kernels"]
    # SmolLM2 has 30 layers of 4 products, plus the LM head: each with its FLOPs for the roofline
    assert data["products"] >= 121 and data["products_with_flops"] == data["products"]
    assert s["read_GBps"] > 0 and s["fma_GFLOPs"] > 0
    assert data["bytes_installed"] == 0  # the Chat had put the model in the page's cache already
    exp = data["experiment"]
    assert len(exp) >= 3 and all(r["matches_numpy"] for r in exp), exp
    assert exp[0]["scheduled_by"] == "GEMV" and all(r["scheduled_by"] == "RowTileGemv" for r in exp[1:])
    assert all(r["ms"] > 0 for r in exp)
    for png in (data["roofline_png"], data["schedules_png"]):
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert errors == []
