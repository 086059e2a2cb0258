# ML compilation on the browser's GPU, in marimo: `marimo edit notebooks/webgpu_marimo.py` (needs the compile
# extra: pip install 'webllm-widget[compile]').
#
# marimo delivers a widget's messages to Python only after the running cell ends, so a cell starts a GPU call
# with f.submit(...) (it returns at once) instead of awaiting it; shown as `view = mo.ui.anywidget(gpu)`,
# every cell that reads `view.value` runs again when the page has answered a call.
import marimo

__generated_with = "0.25.2"
app = marimo.App()


@app.cell
def _():
    import json
    import os
    from pathlib import Path

    import marimo as mo
    import numpy as np
    import tvm.script as tvm_script

    from webllm_widget import HostHoldsMessages, WebGPU
    from webllm_widget.compile import build

    return HostHoldsMessages, Path, WebGPU, build, json, mo, np, os, tvm_script


@app.cell
def _(WebGPU, mo):
    gpu = WebGPU()
    view = mo.ui.anywidget(gpu)
    view  # the browser's WebGPU adapter, and a log of what ran
    return gpu, view


@app.cell
def _(build, tvm_script):
    # a Relax graph (x @ W + b) and a hand-written TensorIR kernel (row sums of squares), compiled for WebGPU.
    # marimo runs cells from text, not from a file, so TVMScript is parsed from a string here
    # (a decorated class needs its source file).
    lesson = tvm_script.from_source("""
@I.ir_module
class Lesson:
    @T.prim_func(s_tir=True)
    def row_sumsq(x: T.Buffer((64, 128), "float32"), y: T.Buffer((64,), "float32")):
        for i, k in T.grid(64, 128):
            with T.sblock("y"):
                vi, vk = T.axis.remap("SR", [i, k])
                with T.init():
                    y[vi] = T.float32(0)
                y[vi] = y[vi] + x[vi, vk] * x[vi, vk]

    @R.function
    def main(x: R.Tensor((64, 128), "float32"), w: R.Tensor((128, 96), "float32"),
             b: R.Tensor((96,), "float32")):
        with R.dataflow():
            y = R.add(R.matmul(x, w), b)
            R.output(y)
        return y

    @R.function
    def sumsq(x: R.Tensor((64, 128), "float32")):
        cls = Lesson
        with R.dataflow():
            y = R.call_tir(cls.row_sumsq, (x,), out_ty=R.Tensor((64,), "float32"))
            R.output(y)
        return y
""")
    lib = build(lesson, name="lesson")
    return (lib,)


@app.cell
def _(gpu, lib, np):
    # start the calls: submit() returns at once, the page answers after this cell ends
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 128), dtype=np.float32)
    w = rng.standard_normal((128, 96), dtype=np.float32)
    b = rng.standard_normal(96, dtype=np.float32)
    f = gpu.load(lib)
    affine = f.submit(x, w, b)
    sumsq = f["sumsq"].submit(x)
    return affine, b, f, sumsq, w, x


@app.cell
async def _(HostHoldsMessages, b, f, w, x):
    # awaiting the page inside a marimo cell could never end: refused at once
    try:
        await f(x, w, b)
        refused = ""
    except HostHoldsMessages as e:
        refused = str(e)
    refused
    return (refused,)


@app.cell
def _(Path, affine, b, json, mo, np, os, refused, sumsq, view, w, x):
    # runs again each time the page answers a call (it writes `calls_done`, a change marimo reacts to)
    done = view.value.get("calls_done", 0)
    errors = {}
    if affine.done():
        errors["affine"] = float(np.abs(affine.result - (x @ w + b)).max())
    if sumsq.done():
        errors["sumsq"] = float(np.abs(sumsq.result - (x * x).sum(axis=1)).max())
    state = {"calls_done": done, "max_abs_error": errors, "refused": refused, "adapter": view.value.get("adapter")}
    if os.environ.get("WEBLLM_WIDGET_RESULTS"):  # the test suite reads what Python saw
        (Path(os.environ["WEBLLM_WIDGET_RESULTS"]) / f"gpu-{done}.json").write_text(json.dumps(state))
    mo.md(f"{done} calls answered; largest difference from numpy: {errors}")
    return (state,)


if __name__ == "__main__":
    app.run()
