"""Argument checks and helpers of the WebGPU widget that need no browser."""
from __future__ import annotations

import types

import numpy as np
import pytest
from tvm.script import ir as I
from tvm.script import relax as R

from webllm_widget.errors import KernelError
from webllm_widget.widgets.webgpu import Param, WebGPU, check_args, highlight_wgsl, signatures_of


@I.ir_module
class Symbolic:
    @R.function
    def main(x: R.Tensor(("n", 8), "float32"), y: R.Tensor(("n",), "float32")):
        with R.dataflow():
            z = R.add(R.sum(x, axis=1), y)
            R.output(z)
        return z


def test_signature_keeps_symbolic_dims_and_binds_them_across_arguments():
    (x, y), = signatures_of(Symbolic).values()
    assert x == Param("x", "float32", ("n", 8)) and y.shape == ("n",)
    check_args("main", [x, y], [np.zeros((5, 8), np.float32), np.zeros(5, np.float32)])
    with pytest.raises(KernelError) as info:
        check_args("main", [x, y], [np.zeros((5, 8), np.float32), np.zeros(4, np.float32)])
    assert info.value.detail == {"reason": "shape", "param": "y"}


def test_wrong_dtype_names_the_conversion():
    p = [Param("x", "float32", (2,))]
    with pytest.raises(KernelError, match=r"astype\(np.float32\)"):
        check_args("f", p, [np.zeros(2, np.int32)])


def test_library_for_another_target_is_refused():
    lib = types.SimpleNamespace(wasm=b"\0asm", sha256="0" * 64, functions=["main"], wgsl={}, name="c", target="cpu")
    with pytest.raises(KernelError) as info:
        WebGPU().load(lib)
    assert info.value.detail["reason"] == "target"


def test_wgsl_highlighting_escapes_and_colours():
    html = highlight_wgsl("@compute fn f() { let a : f32 = 1.0; } // x < y")
    assert "&lt;" in html and html.count("<span") >= 5 and "<script" not in html
