"""Every family's GGUF, as llama.cpp's converter and ``llama-quantize`` write it, read exactly (no compiler needed).

Each family's tiny model (``families.GGUF_TINY``) is written by PyPI ``gguf``'s writer in the Q4_K_M mix
(``tiny.llama_cpp_types``: Q4_K, Q6_K for the LM head and the last layer's ``attn_v``/``ffn_down``, Q5_K for a fused
``attn_qkv``, Q5_0/Q8_0 where a row is not 256 long) and in Q8_0, with llama.cpp's tensor names (``gguf``'s own
name map) and metadata. Checked here, per file:

- the reader gives every tensor exactly as ``gguf``'s dequantizer does, in HF names and conventions (Llama's q/k
  rows un-permuted, Gemma's norms stored as ``1 + w`` shifted back, Phi-3's fused tensors);
- its config runs the numpy reference to the same logits as the HF folder's config (Phi-3's LongRoPE factors come
  from the file's ``rope_factors_*`` tensors, Gemma 3's two RoPE bases and window from its keys);
- the ``ggml`` build's weights (``param_records``, dequantized as the kernels do) are exactly what the browser test's
  reference runs: the file's values, with the matrices of more than 4 bits re-quantized to ``q8_0``.

It also reports the logit error of each compile choice against the file's exact weights (``-s`` prints the table;
README "GGUF" quotes it): ``ggml`` (Q4_K kept exactly, Q5_*/Q6_K re-quantized to 8 bits, Q8_0 kept) and ``q4f32_1``
(everything re-quantized to 4 bits, one scale per 32).
"""
from __future__ import annotations

import numpy as np
import pytest

from families import GGUF_CASES, GGUF_TINY, hf_config
from llama_native import reference_logits
from tiny import split_fused
from webllm_widget.compile.arch import registry
from webllm_widget.compile.checkpoint import open_checkpoint
from webllm_widget.compile.params import param_records
from webllm_widget.compile.quant.ggml import ggml_quantization
from webllm_widget.compile.quant.packing import dequantize

gguf = pytest.importorskip("gguf")


def _held(ckpt, quant) -> dict[str, np.ndarray]:
    """What a build holds, per HF tensor name: ``param_records`` dequantized as the kernels do, split back."""
    cfg = registry.config_from_dict(ckpt.config)
    records = dict(param_records(ckpt, cfg, quant))
    out = {}
    for path, names, is_matrix in registry.family_of(cfg).loader.param_sources(cfg):
        shapes = [ckpt.get(n).shape for n in names]
        if is_matrix:
            fmt = quant.format_of(path, int(shapes[0][1]))
            w = dequantize(fmt, {k[len(path) + 1:]: v for k, v in records.items() if k.startswith(path + ".")})
            parts = np.split(w, np.cumsum([s[0] for s in shapes])[:-1])
        else:
            parts = np.split(records[path], np.cumsum([int(np.prod(s)) for s in shapes])[:-1])
        out.update({n: part.reshape(s) for n, part, s in zip(names, parts, shapes)})
    return split_fused(out, ckpt.config) if ckpt.config["architecture"] == "phi3" else out


@pytest.mark.parametrize("case", list(GGUF_CASES))
def test_a_family_gguf_reads_exactly_and_the_ggml_build_holds_what_the_reference_runs(case):
    c = GGUF_CASES[case]
    path, built, config = c.write()
    ckpt = open_checkpoint(path)
    reader = gguf.GGUFReader(str(path))
    kinds = {t.tensor_type.name for t in reader.tensors if len(t.shape) == 2}
    if c.gguf.ftype == "Q8_0":
        assert kinds == {"Q8_0"}
    else:
        assert {"Q4_K", "Q6_K"} <= kinds <= {"Q4_K", "Q5_K", "Q6_K", "Q5_0", "Q5_1", "Q8_0"}, kinds
    exact = c.gguf.exact
    file_names = split_fused({n: ckpt.get(n).to_numpy() for n in ckpt.tensor_names()}, ckpt.config) \
        if ckpt.config["architecture"] == "phi3" else {n: ckpt.get(n).to_numpy() for n in ckpt.tensor_names()}
    assert sorted(file_names) == sorted(exact)
    for name, w in file_names.items():
        np.testing.assert_array_equal(w, exact[name], err_msg=name)

    want = reference_logits(exact, config)
    np.testing.assert_allclose(reference_logits(exact, ckpt.config), want, atol=1e-4 * np.abs(want).max(), rtol=0)

    held = _held(ckpt, ggml_quantization(ckpt))
    for name, w in built.items():
        np.testing.assert_array_equal(held[name], w, err_msg=name)


def test_q4_k_m_keeps_q4_k_matrices_and_re_quantizes_those_with_a_q6_k_part():
    """Llama's Q4_K_M: layer 0 all Q4_K (kept as q4_1); layer 1's Q6_K attn_v stacked with Q4_K q/k, its Q6_K ffn_down
    and the Q6_K LM head re-quantized to q8_0."""
    path, _, _ = GGUF_CASES["llama-gguf-q4_k_m"].write()
    ckpt = open_checkpoint(path)
    assert ckpt.get("model.layers.1.self_attn.v_proj.weight").ggml_type == "Q6_K"
    assert ckpt.get("model.layers.1.self_attn.q_proj.weight").ggml_type == "Q4_K"
    formats = dict(ggml_quantization(ckpt).formats)
    assert {p: formats[p] for p in ("model.embed_tokens", "model.layers.0.self_attn.qkv_proj",
                                    "model.layers.0.mlp.down_proj", "model.layers.1.mlp.gate_up_proj")} == {
        "model.embed_tokens": "q4_1", "model.layers.0.self_attn.qkv_proj": "q4_1",
        "model.layers.0.mlp.down_proj": "q4_1", "model.layers.1.mlp.gate_up_proj": "q4_1"}
    assert {formats[p] for p in ("model.layers.1.self_attn.qkv_proj", "model.layers.1.mlp.down_proj",
                                 "lm_head")} == {"q8_0"}


def test_gemma3_gguf_norms_are_shifted_back_and_llama_cpp_defaults_fill_the_missing_keys(tmp_path):
    """llama.cpp's converter stores Gemma's norms as 1 + w; a gemma3 GGUF without the pattern/local-base keys gets
    llama.cpp's own values (every 6th layer global, local base 10000, scale head_dim ** -0.5)."""
    tiny = GGUF_TINY["gemma3"]()
    tiny.config["sliding_window_pattern"] = 6
    path = tiny.write_gguf(tmp_path / "g.gguf", ftype="Q8_0")
    raw = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(path)).tensors}
    np.testing.assert_array_equal(raw["blk.0.attn_q_norm.weight"],
                                  tiny.weights["model.layers.0.self_attn.q_norm.weight"] + np.float32(1))
    ckpt = open_checkpoint(path)
    assert "gemma3.attention.sliding_window_pattern" not in gguf.GGUFReader(str(path)).fields
    c = ckpt.config
    assert (c["sliding_window_pattern"], c["rope_local_base_freq"], c["query_pre_attn_scalar"]) == (6, 1e4, 64.0)
    np.testing.assert_allclose(ckpt.get("model.layers.0.self_attn.q_norm.weight").to_numpy(),
                               tiny.weights["model.layers.0.self_attn.q_norm.weight"], atol=1e-7, rtol=0)


def test_phi3_gguf_longrope_is_read_from_the_factor_tensors_and_a_half_pair_is_refused(tmp_path):
    from tiny import copy_gguf_with
    from webllm_widget.errors import BadModel

    tiny = GGUF_TINY["phi3"]()
    path = tiny.write_gguf(tmp_path / "p.gguf", ftype="Q8_0")
    rs = open_checkpoint(path).config["rope_scaling"]
    want = hf_config(tiny)["rope_scaling"]
    assert rs["rope_type"] == "longrope" and rs["original_max_position_embeddings"] == 64
    np.testing.assert_allclose(rs["short_factor"], want["short_factor"], rtol=1e-6)
    np.testing.assert_allclose(rs["long_factor"], want["long_factor"], rtol=1e-6)
    reader = gguf.GGUFReader(str(path))
    w = gguf.GGUFWriter(str(tmp_path / "half.gguf"), "phi3")
    for key, fld in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        sub = {"sub_type": fld.types[-1]} if fld.types[0] == gguf.GGUFValueType.ARRAY else {}
        w.add_key_value(key, fld.contents(), fld.types[0], **sub)
    for t in reader.tensors:
        if t.name != "rope_factors_short.weight":
            w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(BadModel, match="rope_factors_short/rope_factors_long"):
        open_checkpoint(tmp_path / "half.gguf")
    bad = copy_gguf_with(path, tmp_path / "attn.gguf", {"phi3.rope.scaling.attn_factor": 1.5})
    with pytest.raises(BadModel, match="attention_factor"):
        open_checkpoint(bad)


def test_logit_error_of_each_compile_choice_against_the_exact_file_weights():
    """``ggml`` keeps Q4_K exactly and re-quantizes Q5_*/Q6_K to 8 bits; ``q4f32_1`` re-quantizes all to 4 bits.
    Printed per Q4_K_M case (max |logit error| / largest |logit|); keeping blocks must beat re-quantizing everything.
    (A Q8_0 file's ``ggml`` build holds its exact weights: the test above.)"""
    from webllm_widget.compile.quant.modes import as_quantization

    print()
    for case, c in GGUF_CASES.items():
        if c.gguf.ftype != "Q4_K_M":
            continue
        path, built, config = c.write()
        ckpt = open_checkpoint(path)
        exact = reference_logits(c.gguf.exact, config)
        scale = float(np.abs(exact).max())
        ggml = float(np.abs(reference_logits(built, config) - exact).max())
        q4 = float(np.abs(reference_logits(_held(ckpt, as_quantization("q4f32_1")), config) - exact).max())
        print(f"{case:22s} logits up to {scale:6.1f}: ggml {ggml:.3g} ({ggml / scale:.1e}), "
              f"q4f32_1 {q4:.3g} ({q4 / scale:.1e})")
        assert ggml < q4 / 5


def test_a_llama_gguf_with_a_sliding_window_windows_every_layer_as_mistral_does(tmp_path):
    """A Mistral GGUF is a ``llama`` one; where it names ``llama.attention.sliding_window`` every layer is windowed,
    as the HF folder's ``sliding_window`` makes it."""
    from families import mistral_tiny
    from tiny import copy_gguf_with

    tiny = mistral_tiny()
    plain = tiny.write_gguf(tmp_path / "m.gguf", matrix_type="F32", embed_type="F32", arch="llama")
    assert "sliding_window" not in open_checkpoint(plain).config
    path = copy_gguf_with(plain, tmp_path / "w.gguf", {},
                          {"llama.attention.sliding_window": (7, gguf.GGUFValueType.UINT32)})
    got, want = open_checkpoint(path).config, hf_config(tiny)
    assert (got["sliding_window"], got["sliding_layers"]) == (want["sliding_window"], want["sliding_layers"]) == (7, [0, 1])
    np.testing.assert_allclose(reference_logits(tiny.gguf_weights, got), reference_logits(tiny.weights, want),
                               atol=1e-4, rtol=0)


def test_a_gemma2_gguf_without_its_caps_gets_llama_cpps_and_its_even_layers_are_windowed(tmp_path):
    """llama.cpp's converter writes ``gemma2.attn_logit_softcapping``/``final_logit_softcapping`` and the window; a
    file without the caps gets llama.cpp's own (50 and 30). Its norms are stored as 1 + w."""
    tiny = GGUF_TINY["gemma2"]()
    path = tiny.write_gguf(tmp_path / "g.gguf", ftype="Q8_0")
    c = open_checkpoint(path).config
    assert (c["attn_logit_softcapping"], c["final_logit_softcapping"]) == (4.0, 15.0)
    assert (c["sliding_window"], c["sliding_layers"], c["query_pre_attn_scalar"]) == (6, [0], 64.0)
    raw = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(path)).tensors}
    np.testing.assert_array_equal(raw["blk.0.post_ffw_norm.weight"],
                                  tiny.weights["model.layers.0.post_feedforward_layernorm.weight"] + np.float32(1))
    reader = gguf.GGUFReader(str(path))
    w = gguf.GGUFWriter(str(tmp_path / "nocaps.gguf"), "gemma2")
    for key, fld in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key.endswith("softcapping"):
            continue
        sub = {"sub_type": fld.types[-1]} if fld.types[0] == gguf.GGUFValueType.ARRAY else {}
        w.add_key_value(key, fld.contents(), fld.types[0], **sub)
    for t in reader.tensors:
        w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    c = open_checkpoint(tmp_path / "nocaps.gguf").config
    assert (c["attn_logit_softcapping"], c["final_logit_softcapping"]) == (50.0, 30.0)
