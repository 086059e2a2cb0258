"""Inside the LLM: the built-in model's decode step profiled kernel by kernel on the page's GPU, its kernels' TIR,
a roofline, and a schedule experiment on one of its products checked against numpy (headless Chromium)."""
from __future__ import annotations

import numpy as np
import pytest

from webllm_widget.inside import ScheduleExperiment
from webllm_widget.widgets.webgpu import WebGPU

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_the_built_in_models_decode_step_kernel_by_kernel(widget_host, tmp_path):
    async def go():
        gpu = WebGPU()
        await gpu.wait_ready()
        return await gpu.profile(prompt=8, steps=3)

    p = widget_host.run(go(), timeout=900)
    d = p.dispatches
    passes = p.decode_passes[p.step_index]
    assert len(d) == len(passes) > 100  # one row per dispatch (SmolLM2: 30 layers of several kernels)
    assert p.timestamps and d["gpu_ms"].notna().all()  # SwiftShader offers timestamp-query
    # the dispatches' GPU times add up to the step's wall time (the rest is the page's encoding and read-back)
    assert 0.8 * p.step_ms <= p.gpu_ms <= 1.02 * p.step_ms, (p.gpu_ms, p.step_ms)
    # every dispatched kernel has its WGSL from the page and its scheduled TIR from the kernel
    for kernel in set(d["kernel"]):
        assert "fn " in p.wgsl(kernel) and "@compute" in p.wgsl(kernel)
        assert "@T.prim_func" in p.tir(kernel)
    # the products have FLOPs and bytes, hence a place on the roofline below the measured roofs
    products = d[d["function"].str.contains("matmul")]
    assert len(products) >= 4 * 30 and products["flops"].notna().all() and (products["bytes"] > 0).all()
    assert (products["GFLOPs"] <= p.peaks["fma_GFLOPs"] * 1.5).all()
    assert p.peaks["read_GBps"] > 0 and p.peaks["fma_GFLOPs"] > 0
    assert p.kernels["share"].sum() == pytest.approx(1.0)
    fig = p.roofline()
    fig.savefig(tmp_path / "roofline.png")
    assert len(fig.axes[0].collections) >= 2  # kernels plotted as points


def test_a_schedule_experiment_rebuilds_a_product_checks_it_and_times_it(widget_host):
    from webllm_widget import models

    exp = ScheduleExperiment.for_model(models.default(schedule="fallback"))

    async def go():
        gpu = WebGPU()
        await gpu.wait_ready()
        return await exp.run(gpu, repeat=3)

    t = widget_host.run(go(), timeout=900)
    assert list(t["variant"]) == [v.label for v in exp.variants]
    assert t["matches_numpy"].all(), t[["variant", "max_abs_err"]]
    # each variant was scheduled by the rule it names (a rule that did not match would show here)
    assert t.loc[0, "scheduled_by"] == "GEMV"
    assert (t.loc[1:, "scheduled_by"] == "RowTileGemv").all()
    assert (t["ms"] > 0).all() and np.isfinite(t["GBps"]).all()
    fig = exp.plot()
    assert fig.axes[0].get_xlabel() == "output rows per thread"
