"""Checkpoint readers: GGUF and HF folders give the same HF-named tensors; bad files give clear errors."""
from __future__ import annotations

import json

import gguf
import numpy as np
import pytest

from tiny import TinyLlama, copy_gguf_with
from webllm_widget.compile.checkpoint import open_checkpoint
from webllm_widget.errors import BadModel


@pytest.fixture
def tiny():
    return TinyLlama.make(seed=1)


def test_gguf_and_hf_folder_give_the_same_config_and_tensor_names(tiny, tmp_path):
    g = open_checkpoint(tiny.write_gguf(tmp_path / "t.gguf"))
    h = open_checkpoint(tiny.write_hf(tmp_path / "hf"))
    keys = ("architecture", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
            "head_dim", "num_hidden_layers", "rope_theta", "vocab_size", "tie_word_embeddings",
            "max_position_embeddings", "attention_bias", "bos_token_id", "eos_token_id")
    assert {k: g.config[k] for k in keys} == {k: h.config[k] for k in keys}
    assert g.config["rms_norm_eps"] == pytest.approx(h.config["rms_norm_eps"])
    assert sorted(g.tensor_names()) == sorted(h.tensor_names()) == sorted(tiny.weights)
    assert g.config["num_attention_heads"] == 4 and g.config["num_key_value_heads"] == 2


def test_float_gguf_matches_the_hf_weights_exactly_after_unpermuting_q_and_k(tiny, tmp_path):
    ckpt = open_checkpoint(tiny.write_gguf(tmp_path / "f32.gguf", matrix_type="F32", embed_type="F32"))
    for name, t in ckpt.iter_tensors():
        assert t.shape == tiny.weights[name].shape
        np.testing.assert_array_equal(t.to_numpy(), tiny.weights[name], err_msg=name)


@pytest.mark.parametrize("matrix_type", ["Q4_0", "Q4_1", "Q8_0", "F16"])
def test_quantized_gguf_dequantizes_like_the_gguf_package(tiny, tmp_path, matrix_type):
    ckpt = open_checkpoint(tiny.write_gguf(tmp_path / "q.gguf", matrix_type=matrix_type, embed_type="Q8_0"))
    q = ckpt.get("model.layers.0.self_attn.q_proj.weight")
    assert q.ggml_type == matrix_type
    for name, t in ckpt.iter_tensors():
        np.testing.assert_array_equal(t.to_numpy(), tiny.gguf_weights[name], err_msg=name)
    # quantization error stays small relative to the weights (the file really holds this model)
    w = tiny.weights["model.layers.1.mlp.down_proj.weight"]
    err = np.abs(ckpt.get("model.layers.1.mlp.down_proj.weight").to_numpy() - w).max()
    assert 0 <= err < 0.2 * np.abs(w).max()


def test_raw_bytes_of_quantized_q_rows_are_whole_blocks_in_hf_order(tiny, tmp_path):
    ckpt = open_checkpoint(tiny.write_gguf(tmp_path / "q.gguf", matrix_type="Q4_1"))
    t = ckpt.get("model.layers.0.self_attn.k_proj.weight")
    out_f, in_f = t.shape
    raw = np.asarray(t.raw)
    assert raw.nbytes == out_f * in_f // 32 * 20 == t.nbytes
    # decoding the raw blocks with the gguf package, row by row, gives the HF-ordered matrix
    rows = gguf.quants.dequantize(raw.reshape(out_f, -1), gguf.GGMLQuantizationType.Q4_1)
    np.testing.assert_array_equal(rows, tiny.gguf_weights["model.layers.0.self_attn.k_proj.weight"])


@pytest.mark.parametrize("dtype", ["F16", "BF16"])
def test_hf_folder_reads_half_precision_safetensors(tiny, tmp_path, dtype):
    ckpt = open_checkpoint(tiny.write_hf(tmp_path / "hf", dtype=dtype))
    t = ckpt.get("model.layers.0.mlp.up_proj.weight")
    assert t.ggml_type == dtype
    w = tiny.weights["model.layers.0.mlp.up_proj.weight"]
    tol = 1e-3 if dtype == "F16" else 1e-2
    np.testing.assert_allclose(t.to_numpy(), w, rtol=tol, atol=tol * np.abs(w).max())


def test_qwen2_folder_with_qkv_bias_and_untied_head(tmp_path):
    m = TinyLlama.make(seed=2, arch="qwen2", bias=True, tie=False)
    ckpt = open_checkpoint(m.write_hf(tmp_path / "qwen"))
    assert ckpt.config["architecture"] == "qwen2"
    assert ckpt.config["attention_bias"] is True
    assert ckpt.config["tie_word_embeddings"] is False
    np.testing.assert_array_equal(ckpt.get("model.layers.1.self_attn.k_proj.bias").to_numpy(),
                                  m.weights["model.layers.1.self_attn.k_proj.bias"])
    np.testing.assert_array_equal(ckpt.get("lm_head.weight").to_numpy(), m.weights["lm_head.weight"])


def test_qwen2_gguf_rows_are_not_permuted(tmp_path):
    # llama.cpp permutes q/k only for the llama architecture; a qwen2 GGUF keeps HF order
    m = TinyLlama.make(seed=2, arch="qwen2", bias=True)
    ckpt = open_checkpoint(m.write_gguf(tmp_path / "qwen.gguf", matrix_type="F32", embed_type="F32"))
    assert ckpt.config["attention_bias"] is True
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.bias"):
        np.testing.assert_array_equal(ckpt.get(name).to_numpy(), m.weights[name])


# ---------------------------------------------------------------------------------------- bad input

def test_truncated_gguf_is_reported_with_the_file_and_what_to_do(tiny, tmp_path):
    path = tiny.write_gguf(tmp_path / "t.gguf")
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 5000])
    with pytest.raises(BadModel) as e:
        open_checkpoint(cut)
    msg = str(e.value)
    assert str(cut) in msg and "truncated" in msg and "Download the file again" in msg
    assert e.value.code == "bad-model"


def test_gguf_cut_inside_its_header_is_reported(tiny, tmp_path):
    data = tiny.write_gguf(tmp_path / "t.gguf").read_bytes()
    cut = tmp_path / "header.gguf"
    cut.write_bytes(data[:300])
    with pytest.raises(BadModel) as e:
        open_checkpoint(cut)
    assert str(cut) in str(e.value) and "Download the file again" in str(e.value)


def test_corrupt_gguf_header_is_reported(tiny, tmp_path):
    data = bytearray(tiny.write_gguf(tmp_path / "t.gguf").read_bytes())
    data[8:24] = b"\xff" * 16  # tensor and metadata counts become absurd
    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(BadModel) as e:
        open_checkpoint(bad)
    assert str(bad) in str(e.value) and "Download the file again" in str(e.value)


def test_file_that_is_not_gguf_is_reported(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"<html>404 not found</html>" * 10)
    with pytest.raises(BadModel, match="not a GGUF file"):
        open_checkpoint(bad)


def test_unsupported_gguf_architecture_is_reported(tiny, tmp_path):
    path = tiny.write_gguf(tmp_path / "gpt2.gguf", arch="gpt2")
    with pytest.raises(BadModel) as e:
        open_checkpoint(path)
    msg = str(e.value)
    assert "gpt2" in msg and "not supported" in msg and str(path) in msg and "Llama-family" in msg


def test_unsupported_hf_architecture_is_reported(tiny, tmp_path):
    folder = tiny.write_hf(tmp_path / "hf")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = ["MambaForCausalLM"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BadModel, match="MambaForCausalLM.*not supported"):
        open_checkpoint(folder)


def test_truncated_safetensors_is_reported(tiny, tmp_path):
    folder = tiny.write_hf(tmp_path / "hf")
    st = folder / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-100])
    with pytest.raises(BadModel) as e:
        open_checkpoint(folder)
    assert str(st) in str(e.value) and "truncated" in str(e.value)


def test_missing_path_is_reported(tmp_path):
    with pytest.raises(BadModel, match="no such file"):
        open_checkpoint(tmp_path / "nope.gguf")


def test_hf_folder_with_sharded_safetensors_reads_every_shard(tmp_path):
    from tiny import tiny_tokenizer_json, write_safetensors

    m = TinyLlama.make(seed=3)
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(m.config))
    (folder / "tokenizer.json").write_text(json.dumps(tiny_tokenizer_json()))
    names = sorted(m.weights)
    half = len(names) // 2
    write_safetensors(folder / "model-00001-of-00002.safetensors", {n: m.weights[n] for n in names[:half]})
    write_safetensors(folder / "model-00002-of-00002.safetensors", {n: m.weights[n] for n in names[half:]})
    ckpt = open_checkpoint(folder)
    assert sorted(ckpt.tensor_names()) == names
    for n in (names[0], names[-1]):
        np.testing.assert_array_equal(ckpt.get(n).to_numpy(), m.weights[n])


@pytest.mark.parametrize("key,value", [
    ("rope_scaling", {"rope_type": "dynamic", "factor": 2.0}),
    ("rope_scaling", {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}),
    ("attn_logit_softcapping", 50.0),
    ("hidden_act", "gelu_pytorch_tanh"),
    ("quantization_config", {"quant_method": "gptq", "bits": 4}),
], ids=["rope-dynamic", "rope-yarn", "softcapping", "gelu", "gptq"])
def test_hf_config_key_that_changes_the_maths_and_is_not_implemented_is_refused(tiny, tmp_path, key, value):
    tiny.config[key] = value
    folder = tiny.write_hf(tmp_path / "hf")
    with pytest.raises(BadModel, match=key) as e:
        open_checkpoint(folder)
    assert "refuses" in str(e.value) and "config.json" in str(e.value)


def test_gguf_metadata_key_that_may_change_the_maths_is_refused(tiny, tmp_path):
    src = tiny.write_gguf(tmp_path / "t.gguf")
    bad = copy_gguf_with(src, tmp_path / "capped.gguf", {},
                         {"llama.attn_logit_softcapping": (30.0, gguf.GGUFValueType.FLOAT32)})
    with pytest.raises(BadModel, match="llama.attn_logit_softcapping"):
        open_checkpoint(bad)
    yarn = copy_gguf_with(src, tmp_path / "yarn.gguf", {},
                          {"llama.rope.scaling.type": ("yarn", gguf.GGUFValueType.STRING),
                           "llama.rope.scaling.factor": (4.0, gguf.GGUFValueType.FLOAT32)})
    with pytest.raises(BadModel, match="yarn"):
        open_checkpoint(yarn)


def test_llama3_rope_scaling_is_read_from_hf_and_from_llama_cpp_rope_freqs(tmp_path):
    from reference import rope_frequencies
    from webllm_widget.compile.arch import registry

    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
    t = TinyLlama.make(seed=0, rope_scaling=scaling)
    hf = registry.config_from_dict(open_checkpoint(t.write_hf(tmp_path / "hf")).config)
    assert hf.rope_scaling == scaling
    g = registry.config_from_dict(open_checkpoint(t.write_gguf(tmp_path / "t.gguf")).config)
    assert g.rope_scaling["rope_type"] == "llama3" and g.rope_scaling["factor"] == 8.0
    # the rule fitted to the file's divisors gives the frequencies of the HF rule
    np.testing.assert_allclose(rope_frequencies(16, 10000.0, g.rope_scaling), rope_frequencies(16, 10000.0, scaling),
                               rtol=1e-5)


def test_gguf_rope_freqs_that_follow_no_llama3_rule_are_refused(tiny, tmp_path):
    src = tiny.write_gguf(tmp_path / "t.gguf")
    import gguf as g

    reader = g.GGUFReader(str(src))
    w = g.GGUFWriter(str(tmp_path / "odd.gguf"), "llama")
    for key, fld in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        sub = {"sub_type": fld.types[-1]} if fld.types[0] == g.GGUFValueType.ARRAY else {}
        w.add_key_value(key, fld.contents(), fld.types[0], **sub)
    for t in reader.tensors:
        w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.add_tensor("rope_freqs.weight", np.array([1, 3, 1, 5, 2, 8, 1, 8], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(BadModel, match="rope_freqs.weight.*Llama 3"):
        open_checkpoint(tmp_path / "odd.gguf")


def test_mistral_sliding_window_windows_every_layer_and_keeps_the_context_window(tiny, tmp_path):
    tiny.config.update({"architectures": ["MistralForCausalLM"], "model_type": "mistral", "sliding_window": 128,
                        "max_position_embeddings": 256})
    cfg = open_checkpoint(tiny.write_hf(tmp_path / "hf")).config
    assert cfg["context_window_size"] == 256 and cfg["sliding_window"] == 128
    assert cfg["sliding_layers"] == list(range(tiny.config["num_hidden_layers"]))
