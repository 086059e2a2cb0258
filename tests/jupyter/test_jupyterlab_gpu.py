"""End to end: notebooks/ml_compilation.ipynb runs in a real JupyterLab and a real Notebook 7, in the WebGPU Chromium,
and the kernel gets the right numbers back from the page's GPU through the widget."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from jupyter import JupyterServer

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "ml_compilation.ipynb"

pytestmark = [pytest.mark.browser, pytest.mark.jupyter]


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_ml_compilation_notebook_computes_on_browser_gpu_in_jupyter(chromium, tmp_path, app):
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    results = tmp_path / "results.json"
    with JupyterServer(root, app=app, env={"WEBLLM_WIDGET_NOTEBOOK_RESULTS": str(results)}) as lab:
        page = lab.open_notebook(chromium, NOTEBOOK.name)
        lab.run_all(page)
        data = lab.wait_for_file(results, timeout=900, page=page)
        # the widget rendered in the notebook's output and shows the adapter and the runs
        # textContent, not innerText: JupyterLab hides cells scrolled out of view
        page.wait_for_function("() => !!document.querySelector('.wlw-gpu')", timeout=30000)
        text = page.evaluate("() => [...document.querySelectorAll('.wlw-gpu')].map(e => e.textContent).join('\\n')")
        errors = lab.console_errors()
        route = lab.route_status()
        page.close()

        # Open the notebook again in a new tab (same kernel) and run it again: the library and runtime
        # now come from the page's Cache Storage, so the new widget sends no bytes.
        results.unlink()
        page = lab.open_notebook(chromium, NOTEBOOK.name)
        lab.run_all(page)
        again = lab.wait_for_file(results, timeout=900, page=page)
        page.close()

    assert data["adapter"]["architecture"] == chromium.adapter["architecture"]
    assert f"WebGPU: {chromium.adapter['vendor']}" in text and "main(float32[64×128]" in text
    assert text.count("loaded lesson.wasm") == 1  # two gpu.load() of one library: one load on the page
    # the kernel's own comparison, and an independent one from the arrays it received
    assert data["err_main"] < 1e-4 and data["err_sumsq"] < 1e-4
    arrays = np.load(str(results) + ".npz")
    x, W, b, y, s = (arrays[k] for k in ("x", "W", "b", "y", "s"))
    assert np.abs(y - (x @ W + b)).max() < 1e-4
    assert np.abs(s - (x * x).sum(axis=1)).max() / np.abs(s).max() < 1e-4
    assert data["runs"] == 10 and data["method"] in ("timestamp-query", "wall-clock")
    assert data["bytes_sent"] > 0  # this page had not seen the library before
    # ... and fetched it over the server extension's HTTP route (the runtime and the lesson's library)
    assert route["blobs_served"] >= 1 and route["bytes_served"] > 0, route
    assert again["bytes_sent"] == 0 and again["err_main"] < 1e-4
    assert errors == []
