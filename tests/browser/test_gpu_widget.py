"""The WebGPU widget runs TVM-compiled Relax functions on the page's WebGPU (headless Chromium) and returns numpy."""
from __future__ import annotations

import types

import numpy as np
import pytest
from tvm.script import ir as I
from tvm.script import relax as R

from webllm_widget.compile import build
from webllm_widget.errors import BadArtifact, KernelError, WebGPUUnavailable
from webllm_widget.widgets.webgpu import WebGPU, signatures_of

pytestmark = pytest.mark.browser


@I.ir_module
class MatmulBias:
    @R.function
    def main(x: R.Tensor((16, 64), "float32"), w: R.Tensor((64, 48), "float32"), b: R.Tensor((48,), "float32")):
        with R.dataflow():
            y = R.add(R.matmul(x, w), b)
            R.output(y)
        return y


@I.ir_module
class Reductions:
    @R.function
    def row_sum(x: R.Tensor((24, 200), "float32")):
        with R.dataflow():
            s = R.sum(x, axis=1)
            R.output(s)
        return s

    @R.function
    def col_max(x: R.Tensor((24, 200), "float32")):
        with R.dataflow():
            m = R.max(x, axis=0)
            R.output(m)
        return m


@pytest.fixture(scope="module")
def matmul_lib():
    return build(MatmulBias, name="b_matmul_bias", progress=False)


@pytest.fixture(scope="module")
def reductions_lib():
    return build(Reductions, name="b_reductions", progress=False)


def _rng():
    return np.random.default_rng(7)


def test_matmul_bias_runs_on_webgpu_and_matches_numpy(widget_host, chromium, matmul_lib):
    rng = _rng()
    x = rng.standard_normal((16, 64), dtype=np.float32)
    w = rng.standard_normal((64, 48), dtype=np.float32)
    b = rng.standard_normal(48, dtype=np.float32)

    async def go():
        gpu = WebGPU()
        adapter = await gpu.wait_ready()
        f = gpu.load(matmul_lib)
        y = await f(x, w, b)
        return adapter, y

    adapter, y = widget_host.run(go())
    assert adapter["architecture"] == chromium.adapter["architecture"]
    assert y.shape == (16, 48) and y.dtype == np.float32
    assert np.abs(y - (x @ w + b)).max() < 1e-4
    # the page's view logged the run
    assert "main(float32[16×64]" in widget_host.page.inner_text(".widget")


def test_reductions_run_on_webgpu_and_match_numpy(widget_host, reductions_lib):
    x = _rng().standard_normal((24, 200), dtype=np.float32)

    async def go():
        gpu = WebGPU()
        f = gpu.load(reductions_lib, "row_sum")
        g = gpu.load(reductions_lib, "col_max")  # same library: no second load on the page
        queued = not gpu._channel.is_ready  # the load waits in the kernel until the page says ready
        s = await f(x)
        m = await g(x)
        m2 = await f["col_max"](x)
        return queued, s, m, m2

    queued, s, m, m2 = widget_host.run(go())
    assert queued
    np.testing.assert_array_equal(m, m2)
    assert widget_host.page.inner_text(".widget").count("loaded b_reductions.wasm") == 1
    assert s.shape == (24,) and m.shape == (200,)
    assert np.abs(s - x.sum(axis=1)).max() < 1e-4
    assert np.abs(m - x.max(axis=0)).max() < 1e-4


def test_second_load_of_same_library_sends_no_bytes(widget_host, matmul_lib):
    widget_host.page.evaluate("() => caches.delete('webllm-widget/blobs')")
    rng = _rng()
    x, w, b = (rng.standard_normal(s, dtype=np.float32) for s in [(16, 64), (64, 48), (48,)])

    async def first():
        gpu = WebGPU()
        y = await gpu.load(matmul_lib)(x, w, b)
        return gpu.bytes_sent, y

    sent1, y1 = widget_host.run(first())
    assert sent1 >= len(matmul_lib.wasm)  # library (and the tvmjs bundle) crossed the comm

    # A fresh page (as after a browser reload) and a new widget: everything comes from Cache Storage.
    widget_host.open_page()

    async def second():
        gpu = WebGPU()
        y = await gpu.load(matmul_lib)(x, w, b)
        return gpu.bytes_sent, y

    sent2, y2 = widget_host.run(second())
    assert sent2 == 0
    assert np.abs(y2 - (x @ w + b)).max() < 1e-4
    np.testing.assert_array_equal(y1, y2)


def test_wrong_dtype_or_shape_raises_kernel_error_before_running(widget_host):
    rng = _rng()
    x = rng.standard_normal((16, 64), dtype=np.float32)
    w = rng.standard_normal((64, 48), dtype=np.float32)
    b = rng.standard_normal(48, dtype=np.float32)

    async def go():
        gpu = WebGPU()
        f = gpu.load(MatmulBias)  # from the IRModule: the signature is known, arguments are checked first
        errors = []
        for args in [(x.astype(np.float64), w, b), (x[:8], w, b), (x, w)]:
            try:
                await f(*args)
            except KernelError as e:
                errors.append(e)
        return errors, gpu._channel.bytes_received

    errors, received = widget_host.run(go())
    assert [e.detail["reason"] for e in errors] == ["dtype", "shape", "arity"]
    assert all(e.code == "kernel-error" for e in errors)
    assert "float64" in str(errors[0]) and "float32" in str(errors[0])
    assert received == 0  # nothing ran on the page
    widget_host.page.wait_for_function(
        "() => document.querySelector('.widget').innerText.includes('[kernel-error]')")


def test_kernel_failing_on_the_page_raises_kernel_error_and_next_call_works(widget_host, matmul_lib):
    rng = _rng()
    x = rng.standard_normal((16, 64), dtype=np.float32)
    w = rng.standard_normal((64, 48), dtype=np.float32)
    b = rng.standard_normal(48, dtype=np.float32)
    # A Library without signatures: the wrong shape reaches the page, where TVM's runtime rejects it.
    bare = types.SimpleNamespace(wasm=matmul_lib.wasm, sha256=matmul_lib.sha256, functions=["main"], wgsl={},
                                 name="bare")

    async def go():
        gpu = WebGPU()
        f = gpu.load(bare)
        try:
            await f(x[:8], w, b)
            err = None
        except KernelError as e:
            err = e
        return err, await f(x, w, b)

    err, y = widget_host.run(go())
    assert err is not None and err.code == "kernel-error" and err.detail.get("id")
    assert np.abs(y - (x @ w + b)).max() < 1e-4
    widget_host.page.wait_for_function(
        "() => document.querySelector('.widget').innerText.includes('[kernel-error]')")


def test_timings_come_back_per_run(widget_host, chromium, matmul_lib):
    rng = _rng()
    args = [rng.standard_normal(s, dtype=np.float32) for s in [(16, 64), (64, 48), (48,)]]

    async def go():
        gpu = WebGPU()
        f = gpu.load(matmul_lib)
        return await gpu.time(f, *args, repeat=5)

    t = widget_host.run(go())
    assert len(t.runs_ms) == 5 and all(r > 0 for r in t.runs_ms)
    expected = "timestamp-query" if "timestamp-query" in chromium.adapter["features"] else "wall-clock"
    assert t.method == expected


def test_wgsl_of_a_loaded_function_is_shown(widget_host, matmul_lib):
    async def go():
        gpu = WebGPU()
        return gpu.wgsl(gpu.load(matmul_lib))

    src = widget_host.run(go())
    assert src.kernels and all("@compute" in s for s in src.kernels.values())
    html = src._repr_html_()
    assert "<span" in html and "@compute" in html


def test_load_accepts_an_irmodule_and_checks_its_signature(widget_host):
    sigs = signatures_of(MatmulBias)
    assert [(p.dtype, p.shape) for p in sigs["main"]] == [
        ("float32", (16, 64)), ("float32", (64, 48)), ("float32", (48,))]
    x = np.ones((16, 64), np.float32)
    w = np.full((64, 48), 0.5, np.float32)
    b = np.arange(48, dtype=np.float32)

    async def go():
        gpu = WebGPU()
        return await gpu.load(MatmulBias)(x, w, b)

    y = widget_host.run(go())
    assert np.abs(y - (x @ w + b)).max() < 1e-4


def test_corrupted_library_is_rejected_as_bad_artifact(widget_host, matmul_lib):
    wasm = bytearray(matmul_lib.wasm)
    wasm[100] ^= 0xFF  # the bytes no longer match the sha256 the kernel announces
    fake = types.SimpleNamespace(wasm=bytes(wasm), sha256=matmul_lib.sha256[:-8] + "00000000",
                                 functions=["main"], wgsl={}, name="corrupt")

    async def go():
        gpu = WebGPU()
        f = gpu.load(fake)
        try:
            await f(np.zeros((16, 64), np.float32), np.zeros((64, 48), np.float32), np.zeros(48, np.float32))
        except BadArtifact as e:
            return e
        return None

    err = widget_host.run(go())
    assert err is not None and err.code == "bad-artifact"
    assert "sha256" in str(err)
    stored = widget_host.page.evaluate(
        "async (s) => !!(await (await caches.open('webllm-widget/blobs')).match("
        "`https://webllm-widget.invalid/blobs/${s}`))", fake.sha256)
    assert stored is False


def test_page_without_webgpu_raises_webgpu_unavailable(widget_host_no_webgpu, matmul_lib):
    async def go():
        gpu = WebGPU()
        try:
            await gpu.load(matmul_lib)(np.zeros((16, 64), np.float32), np.zeros((64, 48), np.float32),
                                       np.zeros(48, np.float32))
        except WebGPUUnavailable as e:
            return gpu.adapter, e
        return gpu.adapter, None

    adapter, err = widget_host_no_webgpu.run(go())
    assert err is not None and err.code == "no-webgpu"
    assert adapter == {}
    widget_host_no_webgpu.page.wait_for_function(
        "() => document.querySelector('.widget').innerText.includes('WebGPU unavailable')")
