"""The compiled Llama module, run natively on the CPU, matches the independent numpy reference.

Teacher-forced logits: a 20-token prompt prefilled in chunks of 8 (so chunking is exercised), then
three forced decode steps. Tolerance for float32 weights and compute: 1e-3 absolute on logits of
magnitude ~15 (measured ~1.5e-5: different summation order only).
"""
from __future__ import annotations

import numpy as np
import pytest

from llama_native import reference_logits, run_native
from tiny import TinyLlama
from webllm_widget.compile.arch.llama.config import LlamaConfig
from webllm_widget.errors import BadModel


@pytest.mark.parametrize("variant", [
    dict(),                                   # tied head, GQA 4/2
    dict(tie=False, bias=True, arch="qwen2"),  # untied head, q/k/v bias (Qwen2-style)
    dict(heads=4, kv_heads=4, rope_theta=100000.0, layers=1),
])
def test_prefill_and_decode_logits_match_numpy_reference_in_float32(variant):
    tiny = TinyLlama.make(seed=1, **variant)
    got, _ = run_native(tiny)
    want = reference_logits(tiny.weights, tiny.config)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)


def test_prefill_in_one_chunk_and_in_many_chunks_agree():
    tiny = TinyLlama.make(seed=2)
    one, _ = run_native(tiny, chunk=32)
    many, _ = run_native(tiny, chunk=3)
    np.testing.assert_allclose(one, many, atol=1e-4, rtol=0)


def test_metadata_declares_params_kv_cache_and_mlc_names():
    tiny = TinyLlama.make(seed=0)
    _, ex = run_native(tiny)
    meta = ex.metadata
    names = [p["name"] for p in meta["params"]]
    assert names[0] == "model.embed_tokens.weight"
    assert "model.layers.1.self_attn.qkv_proj.weight" in names
    assert "model.layers.0.mlp.gate_up_proj.weight" in names
    qkv = next(p for p in meta["params"] if p["name"] == "model.layers.0.self_attn.qkv_proj.weight")
    assert qkv["shape"] == [(4 + 2 * 2) * 16, 64]
    assert meta["kv_state_kind"] == "kv_cache" and meta["prefill_chunk_size"] == 8
    assert meta["kv_cache"] == {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}
    for fn in ("_metadata", "embed", "prefill", "decode", "create_tir_paged_kv_cache", "softmax_with_temperature",
               "argsort_probs", "sample_with_top_p", "apply_penalty_inplace", "apply_logit_bias_inplace",
               "apply_bitmask_inplace"):
        assert any(gv.name_hint == fn for gv in ex.mod.get_global_vars()), fn


def test_unsupported_architecture_is_a_bad_model_error():
    with pytest.raises(BadModel, match="gpt2"):
        LlamaConfig.from_dict({"model_type": "gpt2", "hidden_size": 8, "intermediate_size": 8,
                               "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 8})


#: Llama 3.1's RoPE scaling shrunk to a tiny model: with an original context of 64 and head_dim 16, frequency 0
#: is kept, 1 and 2 are blended and 3..7 are divided by 8, so every branch of the rule is used.
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 64}


@pytest.mark.parametrize("scaling", [LLAMA3_SCALING, {"rope_type": "linear", "factor": 4.0}], ids=["llama3", "linear"])
def test_rope_scaling_reaches_the_kv_cache(scaling):
    """Logits from position 19 on (prompt end and forced decode steps), where the scaled angles differ."""
    tiny = TinyLlama.make(seed=3, rope_scaling=scaling)
    got, _ = run_native(tiny)
    want = reference_logits(tiny.weights, tiny.config)
    plain = reference_logits(tiny.weights, {**tiny.config, "rope_scaling": None})
    assert np.abs(want - plain).max() > 0.1, "the scaling must matter at these positions for the test to mean anything"
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)


def test_llama3_scaling_from_a_gguf_rope_freqs_tensor_matches_the_hf_rule(tmp_path):
    from webllm_widget.compile.checkpoint import open_checkpoint

    tiny = TinyLlama.make(seed=3, rope_scaling=LLAMA3_SCALING)
    ckpt = open_checkpoint(tiny.write_gguf(tmp_path / "t.gguf", matrix_type="F32", embed_type="F32"))
    got, _ = run_native(tiny, checkpoint=ckpt, config=ckpt.config)
    np.testing.assert_allclose(got, reference_logits(tiny.weights, tiny.config), atol=1e-3, rtol=0)


def test_unimplemented_rope_scaling_is_refused():
    cfg = dict(TinyLlama.make(seed=0).config, rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    with pytest.raises(BadModel, match="dynamic.*not implemented"):
        LlamaConfig.from_dict(cfg)
