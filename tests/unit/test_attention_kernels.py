"""The attention kernels' soft-capping rewrite and the kernels that replace TVM's (``compile/attention.py``).

The numbers are checked end to end (``test_families.py`` natively, ``tests/browser/test_family_logits.py`` on
WebGPU and the page CPU); here: every attention kernel TVM 0.27 generates, for WebGPU and the CPU, is found and
capped exactly once, the rewritten store is the finished score's, a kernel of an unknown shape stops the build, and
Gemma 2 compiles with TVM's real-GPU schedules.
"""
from __future__ import annotations

import pytest
import tvm

from families import gemma2_tiny
from webllm_widget.compile.arch import registry
from webllm_widget.compile.attention import SOFTCAP_ATTR, SoftCapError, kernel_softcap, softcap_kernel
from webllm_widget.compile.model_lib import compile_model, export_model


def _attention_kernels(mod):
    return {gv.name_hint: f for gv, f in mod.functions.items()
            if isinstance(f, tvm.tirx.PrimFunc) and any(p.name == "sm_scale" for p in f.params)}


@pytest.mark.parametrize("target", ["webgpu", "llvm"])
def test_every_attention_kernel_caps_its_finished_scores_once(target):
    cfg = registry.config_from_dict(gemma2_tiny().config)
    kernels = _attention_kernels(export_model(cfg, "q0f32", target).mod)
    # ragged and paged prefill, decode, the windowed layers' two, and the tree-attention pair
    assert len(kernels) >= 7, sorted(kernels)
    for name, func in kernels.items():
        assert kernel_softcap(func) == 4.0, name
        script = func.script()
        capped = [line.strip() for line in script.splitlines() if "T.tanh" in line]
        assert len(capped) == 1, (name, capped)
        # C * tanh(score / C) with C = cap * log2(e): the scores are kept in base 2
        assert "T.float32(5.7707801635558535)" in capped[0], capped[0]


def test_a_kernel_without_a_recognisable_score_is_refused():
    cfg = registry.config_from_dict({**gemma2_tiny().config, "attn_logit_softcapping": None})
    mod = export_model(cfg, "q0f32", "webgpu").mod
    merge = next(f for gv, f in mod.functions.items() if gv.name_hint == "tir_attention_merge_state")
    with pytest.raises(SoftCapError, match="sm_scale"):
        softcap_kernel(merge, 4.0, "tir_attention_merge_state")
    decode = _attention_kernels(mod)["batch_decode_paged_kv"]
    capped = softcap_kernel(decode, 4.0, "batch_decode_paged_kv")
    assert capped.attrs[SOFTCAP_ATTR] == 4.0
    # its score store now has another shape: a kernel whose scores cannot be found is refused, not left uncapped
    with pytest.raises(SoftCapError, match="has 0 stores of a finished score"):
        softcap_kernel(capped, 4.0, "batch_decode_paged_kv")


def test_gemma2_compiles_for_webgpu_with_the_gpu_schedules():
    """The browser test builds the software-adapter schedule; real GPUs get dlight's and TVM's tiled attention
    kernels, capped by the rewrite (compiled here, not linked)."""
    cfg = registry.config_from_dict(gemma2_tiny().config)
    assert compile_model(export_model(cfg, "q4f32_1", "webgpu"), "webgpu", "auto") is not None
