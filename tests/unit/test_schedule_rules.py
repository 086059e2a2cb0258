"""Schedule rules fail loudly, and every matrix product of the built-in model gets a product rule.

A rule that matches a function and then breaks used to be swallowed, and the function went on to TVM's
generic rules: the library still worked, only slower. Here the rules run on the built-in SmolLM2's real
kernels (the passes up to scheduling, no code generation) for both WebGPU schedules, and the record of
which rule took each function must show no product left to the generic rules.
"""
from __future__ import annotations

import warnings

import pytest
import tvm
from tvm.script import tirx as T

from webllm_widget import models
from webllm_widget.compile import schedules
from webllm_widget.compile.model_lib import _for_schedule, export_model, webgpu_target
from webllm_widget.models.packaged import _plan


@pytest.fixture(scope="module")
def fused():
    """The built-in model's kernels just before scheduling, per WebGPU schedule (built once for the module)."""
    cfg, quant, _ = _plan(models.default_gguf(progress=False))
    tgt = webgpu_target()
    out = {}
    for schedule in ("auto", "fallback"):
        mod = _for_schedule(export_model(cfg, quant, tgt, schedule), tgt, schedule)
        with tgt:
            out[schedule] = tvm.transform.Sequential(schedules.scheduling_passes(tgt, schedules._rules(schedule))[:-1])(mod)
    return out


def _apply(mod, rules) -> dict:
    report: dict = {}
    with webgpu_target():
        schedules.ApplyRules(rules, report)(mod)
    return report


@pytest.mark.parametrize("schedule", ["auto", "fallback"])
def test_every_matrix_product_of_the_builtin_model_gets_a_product_rule(fused, schedule):
    with warnings.catch_warnings():
        warnings.simplefilter("error", schedules.ScheduleFallbackWarning)
        report = _apply(fused[schedule], schedules._rules(schedule))
    assert report.pop("__product_fallbacks__") == []
    products = {n: r for n, r in report.items() if r in schedules.PRODUCT_RULES}
    # q/k/v, o, gate/up and down for a prompt and for one token, and the LM head
    assert len(products) == 9, report
    prefill = {n: r for n, r in products.items() if r == "TokenTileGemm"}
    assert len(prefill) == 4, products
    # one token's products: lanes along the input on hardware GPUs, register tiles on software adapters
    decode = {r for n, r in products.items() if r != "TokenTileGemm"}
    assert decode == {"LaneGemv" if schedule == "auto" else "RowTileGemv"}, products


def test_a_product_left_to_the_generic_rules_is_reported(fused):
    """Without the token-tile rule the prompt's products fall to TVM's generic rules: the record and a warning say so."""
    rules = [r for r in schedules._rules("auto") if not isinstance(r, schedules.TokenTileGemm)]
    with pytest.warns(schedules.ScheduleFallbackWarning, match="dequant_matmul_q4"):
        report = _apply(fused["auto"], rules)
    assert len(report["__product_fallbacks__"]) == 4, report


@T.prim_func(s_tir=True)
def _product(x: T.Buffer((1, 64), "float32"), w: T.Buffer((128, 64), "float32"), y: T.Buffer((1, 128), "float32")):
    T.func_attr({"tirx.noalias": True})
    for i, j, k in T.grid(1, 128, 64):
        with T.sblock("product"):
            vi, vj, vk = T.axis.remap("SSR", [i, j, k])
            with T.init():
                y[vi, vj] = T.float32(0)
            y[vi, vj] = y[vi, vj] + x[vi, vk] * w[vj, vk]


def test_a_rule_that_breaks_names_the_function_and_fails(monkeypatch):
    def broken(self, func):  # takes the product for its shape, then a schedule primitive fails
        tvm.s_tir.Schedule(func).get_sblock("no_such_block")

    monkeypatch.setattr(schedules.RowTileGemv, "_apply", broken)
    mod = tvm.IRModule({"small_product": _product})
    assert schedules.is_product(_product)
    # raised inside a TVM pass: TVM's FFI hands it back as a RuntimeError carrying the message
    with pytest.raises(RuntimeError, match=r"schedule rule RowTileGemv failed on small_product: .*no_such_block"):
        _apply(mod, [schedules.RowTileGemv(), schedules.dl.gpu.Fallback()])
