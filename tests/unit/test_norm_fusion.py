"""Which RMSNorms the hardware library computes inside the one-token products that read them (no compile: the
exported Relax functions are read).

On hardware GPUs (``export_model(schedule="auto")``) decode's q/k/v and gate/up products and the LM head take in
the norm of their input (``quant.nn._matvec``'s ``norm``), so decode calls no ``rms_norm``; prefill keeps the layers'
norms (a prompt's products) and normalises only its last token, inside the LM head. The software adapters' schedule
keeps every norm. A product that ``schedules.LaneGemv`` does not tile keeps its norm (the two-sum reduction would go
to TVM's generic rules). The logits of the fused library are checked against numpy in
tests/browser/test_model_webgpu.py.
"""
from __future__ import annotations

from tiny import TinyLlama
from webllm_widget.compile.arch.llama.config import LlamaConfig
from webllm_widget.compile.model_lib import export_model, webgpu_target


def _norm_calls(cfg: dict, quant: str, schedule: str) -> dict[str, int]:
    mod = export_model(LlamaConfig.from_dict(cfg, prefill_chunk_size=8), quant, webgpu_target(), schedule).mod
    return {fn: mod[fn].script().count("R.nn.rms_norm(") for fn in ("prefill", "decode")}


def test_hardware_decode_computes_every_norm_inside_a_product_with_an_untied_head_and_qkv_bias():
    # the tied head (q4f32_1, ggml, q0f32) is counted in the browser, test_model_webgpu's kernel launches
    cfg = TinyLlama.make(seed=0, layers=2, tie=False, arch="qwen2", bias=True).config
    assert _norm_calls(cfg, "q4f32_1", "auto") == {"prefill": 4, "decode": 0}
    assert _norm_calls(cfg, "q4f32_1", "fallback") == {"prefill": 5, "decode": 5}


def test_a_product_the_lane_schedule_does_not_tile_keeps_its_norm():
    # 96 inputs: not a multiple of 8 words x 8 lanes
    cfg = TinyLlama.make(seed=0, layers=2, hidden=96, heads=3, kv_heads=1, ffn=192).config
    assert _norm_calls(cfg, "q0f32", "auto") == {"prefill": 5, "decode": 5}
