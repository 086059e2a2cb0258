"""Model families other than Llama, compiled natively (llvm) and judged by the numpy reference.

Teacher-forced logits (20-token prompt in chunks of 8, three forced tokens) of tiny random checkpoints read
through the real readers (safetensors written here, GGUF written by PyPI ``gguf``), float32 weights and
compute: tolerance 1e-3 absolute, as in ``test_llama_native``. Each test also checks that the feature it is
about moves the reference by far more than the tolerance, so dropping the feature fails it.
"""
from __future__ import annotations

import numpy as np
import pytest

from families import gemma2_tiny, gemma3_tiny, mistral_tiny, phi3_tiny
from llama_native import reference_logits, run_native
from tiny import TinyLlama
from webllm_widget.compile.arch import registry
from webllm_widget.compile.checkpoint import open_checkpoint


def _without(weights: dict, *parts: str) -> dict:
    return {k: v for k, v in weights.items() if not any(p in k for p in parts)}


@pytest.mark.parametrize("source, variant", [("hf", dict()), ("gguf", dict(tie=False, head_dim=32))],
                         ids=["hf-tied", "gguf-untied-wide-heads"])
def test_qwen3_per_head_qk_norm_matches_the_reference(tmp_path, source, variant):
    tiny = TinyLlama.make(seed=4, arch="qwen3", **variant)
    if source == "hf":
        ckpt = open_checkpoint(tiny.write_hf(tmp_path / "hf"))
    else:
        ckpt = open_checkpoint(tiny.write_gguf(tmp_path / "t.gguf", matrix_type="F32", embed_type="F32"))
    assert ckpt.config["architecture"] == "qwen3" and not ckpt.config["attention_bias"]
    assert ckpt.config["head_dim"] == tiny.config["head_dim"]
    assert ckpt.config["tie_word_embeddings"] == variant.get("tie", True)
    cfg = registry.config_from_dict(ckpt.config)
    assert type(cfg).__name__ == "Qwen3Config"
    got, ex = run_native(tiny, checkpoint=ckpt, config=ckpt.config)
    assert "model.layers.1.self_attn.k_norm.weight" in [p["name"] for p in ex.metadata["params"]]
    want = reference_logits(tiny.weights, tiny.config)
    plain = reference_logits(_without(tiny.weights, "q_norm", "k_norm"), tiny.config)
    assert np.abs(want - plain).max() > 0.5, "the q/k norms must matter for the test to mean anything"
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)


def test_qwen3_compiles_for_webgpu_with_the_gpu_schedules():
    """The browser test builds the software-adapter schedule; real GPUs get dlight's (compiled here, not linked)."""
    from webllm_widget.compile.model_lib import compile_model, export_model

    cfg = registry.config_from_dict(TinyLlama.make(seed=4, arch="qwen3", tie=False, head_dim=32).config)
    ex = compile_model(export_model(cfg, "q4f32_1", "webgpu"), "webgpu", "auto")
    assert ex is not None


def test_llama3_rope_scaling_with_heads_of_64_compiles_for_webgpu_with_the_gpu_schedules():
    """Llama 3.x (Llama-3.2-1B's heads of 64, llama3 RoPE scaling): TVM's common-subexpression elimination broke the
    prefill attention kernels ("cse_vN has been used before definition"); such models build without that pass."""
    from webllm_widget.compile.model_lib import compile_model, export_model

    scaling = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    cfg = registry.config_from_dict(dict(TinyLlama.make(seed=0, hidden=256, heads=4, kv_heads=1, head_dim=64).config,
                                         rope_scaling=scaling))
    ex = export_model(cfg, "q4f32_1", "webgpu")
    assert ex.tir_config == {"tirx.disable_cse_tir": True}
    assert compile_model(ex, "webgpu", "auto") is not None
    plain = registry.config_from_dict(TinyLlama.make(seed=0).config)
    assert export_model(plain, "q4f32_1", "webgpu").tir_config == {}  # other models keep the pass


def test_qwen2_5_config_with_its_sliding_window_keys_reads_as_qwen2():
    """Qwen2.5's config.json names a sliding window it does not use (use_sliding_window false)."""
    from webllm_widget.compile.arch.llama import config as llama

    hf = dict(TinyLlama.make(seed=0, arch="qwen2", bias=True).config, use_sliding_window=False,
              sliding_window=131072, max_window_layers=21)
    out = llama.from_hf(hf, "qwen2", {"lm_head.weight"}, "tiny")
    assert out["context_window_size"] == hf["max_position_embeddings"] and "sliding_window" not in out
    assert out["attention_bias"] is True


def test_layer_types_name_the_windowed_layers_and_unknown_kinds_are_refused():
    from webllm_widget.compile.arch.llama import config as llama
    from webllm_widget.errors import BadModel

    hf = dict(TinyLlama.make(seed=0, arch="qwen3").config, sliding_window=64,
              layer_types=["sliding_attention", "full_attention"])
    out = llama.from_hf(hf, "qwen3", set(), "tiny")
    assert out["context_window_size"] == 256 and out["sliding_window"] == 64 and out["sliding_layers"] == [0]
    cfg = registry.config_from_dict(out)
    assert cfg.attn_kinds() == ["mha_sliding", "mha"] and cfg.prefill_chunk_size <= 64
    qwen2 = dict(TinyLlama.make(seed=0, arch="qwen2", layers=3).config, sliding_window=64, use_sliding_window=True,
                 max_window_layers=1)
    assert llama.from_hf(qwen2, "qwen2", set(), "tiny")["sliding_layers"] == [1, 2]
    hf["layer_types"] = ["chunked_attention", "full_attention"]
    with pytest.raises(BadModel, match="layer_types"):
        llama.from_hf(hf, "qwen3", set(), "tiny")



@pytest.mark.parametrize("source", ["hf", "gguf"])
def test_phi3_fused_checkpoints_and_longrope_match_the_reference(tmp_path, source):
    """Phi-3.5's LongRoPE (short factors, attention factor): HF from config.json, GGUF from llama.cpp's
    ``rope_factors_short/long`` tensors and ``phi3.rope.scaling.*`` keys beside its fused attn_qkv/ffn_up."""
    tiny = phi3_tiny()
    if source == "hf":
        ckpt = open_checkpoint(tiny.write_hf(tmp_path / "hf"))
        weights = tiny.weights
    else:
        ckpt = open_checkpoint(tiny.write_gguf(tmp_path / "t.gguf", matrix_type="F32", embed_type="F32"))
        weights = tiny.gguf_weights
    assert "model.layers.0.self_attn.qkv_proj.weight" in ckpt.tensor_names()
    assert ckpt.config["context_window_size"] == 64, "LongRoPE caps the context at the original length"
    got, _ = run_native(tiny, checkpoint=ckpt, config=ckpt.config)
    want = reference_logits(weights, ckpt.config)
    plain = reference_logits(weights, {**ckpt.config, "rope_scaling": None})
    assert np.abs(want - plain).max() > 0.5, "LongRoPE must matter for the test to mean anything"
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)


def test_gemma3_text_matches_the_reference(tmp_path):
    """Two RoPE bases (sliding layers 1e4, the global one 1e6 with linear scaling), (1 + w) norms, post-norms,
    GeGLU-tanh, q/k norms, sqrt(hidden) embedding scale, query_pre_attn_scalar."""
    tiny = gemma3_tiny()
    ckpt = open_checkpoint(tiny.write_hf(tmp_path / "hf"))
    assert ckpt.config["sliding_window"] == 128 and ckpt.config["sliding_layers"] == [0, 2]
    got, _ = run_native(tiny, checkpoint=ckpt, config=ckpt.config)
    want = reference_logits(tiny.weights, ckpt.config)
    one_base = reference_logits(tiny.weights, {**ckpt.config, "rope_local_base_freq": ckpt.config["rope_theta"]})
    assert np.abs(want - one_base).max() > 0.5, "the two RoPE bases must matter for the test to mean anything"
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)


def test_gemma3_soft_capping_and_other_activations_are_refused():
    from webllm_widget.compile.arch.gemma3 import config as gemma3
    from webllm_widget.errors import BadModel

    hf = gemma3_tiny().config
    for key, value, match in [("attn_logit_softcapping", 50.0, "soft-capping"),
                              ("final_logit_softcapping", 30.0, "soft-capping"),
                              ("hidden_activation", "gelu", "GeLU-tanh"),
                              ("layer_types", ["full_attention"] * 3, "layer_types")]:
        with pytest.raises(BadModel, match=match):
            gemma3.from_hf({**hf, key: value}, "gemma3_text", set(), "tiny")


def test_what_phi3_and_gemma_need_and_is_not_implemented_is_refused(tmp_path):
    from webllm_widget.compile.arch.phi3 import config as phi3
    from webllm_widget.errors import BadModel

    hf = dict(phi3_tiny().config)
    hf["rope_scaling"] = dict(hf["rope_scaling"], attention_factor=1.0)
    with pytest.raises(BadModel, match="attention_factor"):
        phi3.from_hf(hf, "phi3", set(), "tiny")
    with pytest.raises(BadModel, match="partial_rotary_factor"):
        phi3.from_hf(dict(phi3_tiny().config, partial_rotary_factor=0.75), "phi3", set(), "tiny")
    for arch, needs in [("GemmaForCausalLM", "RMSNorm"), ("Gemma3ForConditionalGeneration", "multimodal")]:
        folder = TinyLlama.make(seed=0).write_hf(tmp_path / arch)
        (folder / "config.json").write_text((folder / "config.json").read_text().replace("LlamaForCausalLM", arch))
        with pytest.raises(BadModel, match=needs):
            open_checkpoint(folder)


def test_mistral_sliding_window_shorter_than_the_sequence_matches_the_reference(tmp_path):
    """Every layer attends within a window of 7 (the paged KV cache's windowed layers); the prompt goes in chunks of
    at most the window, and the window moves the logits far more than the tolerance."""
    tiny = mistral_tiny()
    ckpt = open_checkpoint(tiny.write_hf(tmp_path / "hf"))
    assert ckpt.config["sliding_window"] == 7 and ckpt.config["sliding_layers"] == [0, 1]
    assert ckpt.config["context_window_size"] == tiny.config["max_position_embeddings"]
    cfg = registry.config_from_dict(ckpt.config)
    assert cfg.attn_kinds() == ["mha_sliding", "mha_sliding"] and cfg.prefill_chunk_size == 7
    got, ex = run_native(tiny, checkpoint=ckpt, config=ckpt.config)
    assert ex.metadata["prefill_chunk_size"] == 7
    want = reference_logits(tiny.weights, ckpt.config)
    full = reference_logits(tiny.weights, {**ckpt.config, "sliding_window": None})
    assert np.abs(want - full).max() > 0.5, "the window must matter for the test to mean anything"
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)


def test_gemma2_soft_caps_and_windows_match_the_reference(tmp_path):
    """Attention soft-capping inside TVM's KV-cache kernels (rewritten), final-logit soft-capping, windowed even
    layers (window 6 in 23 positions), (1 + w) norms, post-norms, GeGLU-tanh, sqrt(hidden) embedding scale,
    query_pre_attn_scalar. Each cap and the window move the reference's logits by far more than the tolerance."""
    tiny = gemma2_tiny()
    ckpt = open_checkpoint(tiny.write_hf(tmp_path / "hf"))
    c = ckpt.config
    assert (c["attn_logit_softcapping"], c["final_logit_softcapping"]) == (4.0, 15.0)
    assert c["sliding_window"] == 6 and c["sliding_layers"] == [0, 2]
    cfg = registry.config_from_dict(c)
    assert type(cfg).__name__ == "Gemma2Config" and cfg.attn_kinds() == ["mha_sliding", "mha", "mha_sliding"]
    got, ex = run_native(tiny, checkpoint=ckpt, config=c)
    want = reference_logits(tiny.weights, c)
    for key, value in (("attn_logit_softcapping", None), ("final_logit_softcapping", None),
                       ("sliding_window", None), ("query_pre_attn_scalar", 32)):
        other = reference_logits(tiny.weights, {**c, key: value})
        assert np.abs(want - other).max() > 0.3, f"{key} must matter for the test to mean anything"
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)


def test_gemma2_other_activations_and_disagreeing_windows_are_refused():
    from webllm_widget.compile.arch.gemma2 import config as gemma2
    from webllm_widget.errors import BadModel

    hf = gemma2_tiny().config
    for key, value, match in [("hidden_activation", "gelu", "GeLU-tanh"), ("sliding_window_size", 5, "differs"),
                              ("layer_types", ["chunked_attention"] * 3, "layer_types")]:
        with pytest.raises(BadModel, match=match):
            gemma2.from_hf({**hf, key: value}, "gemma2", set(), "tiny")
