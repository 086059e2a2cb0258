"""No shader-f16: an f16-compute model is refused before any download, with a message naming its f32 variant;
what the user gets by default computes in f32 and needs no shader-f16.

The adapter here is the real one: SwiftShader's WebGPU in Chromium 156 does not offer ``shader-f16``
(``requestDevice({requiredFeatures: ['shader-f16']})`` fails with "Unsupported feature"), so no flag or
page-side wrapper is involved; the first test checks that against the adapter itself.
"""
from __future__ import annotations

from urllib.parse import urlparse

import pytest

from webllm_widget import models
from webllm_widget.models.devices import f16_requirements
from webllm_widget.errors import ShaderF16Unavailable

pytestmark = pytest.mark.browser

PREBUILT_F16 = "SmolLM2-360M-Instruct-q4f16_1-MLC"
PREBUILT_F32 = "SmolLM2-360M-Instruct-q4f32_1-MLC"


@pytest.fixture(scope="module")
def f16_folder():
    """The tiny Llama built with q4f16_1 (float16 compute: a real f16 model folder, library included)."""
    from tiny import tiny_folder

    return tiny_folder("seed0", quantization="q4f16_1")


@pytest.fixture(scope="module")
def chat(rel, tiny_folder):
    return rel.chat(tiny_folder, temperature=0, max_tokens=3)


def _next_load_answers(rel, chat, tiny_folder) -> None:
    async def go():
        await chat.load(str(tiny_folder))
        return await chat.ask("hello")
    text = rel.run(go())
    assert chat.status == "ready" and chat.error == {}
    assert chat.messages[-1] == {"role": "assistant", "content": text}


def test_this_adapter_really_lacks_shader_f16(rel):
    page = rel.page
    got = page.evaluate("""async () => {
        const a = await navigator.gpu.requestAdapter();
        let device = 'created';
        try { (await a.requestDevice({requiredFeatures: ['shader-f16']})).destroy(); } catch (e) { device = String(e); }
        return {features: [...a.features], device};
    }""")
    assert "shader-f16" not in got["features"]
    assert "shader-f16" in got["device"] and got["device"] != "created"


def test_an_f16_model_folder_is_refused_before_any_byte_is_sent_naming_the_f32_variant(rel, chat, f16_folder,
                                                                                       tiny_folder):
    sent = chat.bytes_sent

    async def go():
        with pytest.raises(ShaderF16Unavailable) as e:
            await chat.load(str(f16_folder))
        return e.value
    err = rel.run(go(), timeout=60)
    assert err.code == "no-shader-f16"
    assert "q4f32_1" in str(err) and "webllm-widget build --quantization q4f32_1" in str(err)
    assert err.detail["f32_variant"] == "q4f32_1" and err.detail["missing_features"] == ["shader-f16"]
    assert chat.bytes_sent == sent  # refused before installing: no model byte went to the page
    assert chat.status == "error" and chat.error["code"] == "no-shader-f16"
    _next_load_answers(rel, chat, tiny_folder)


def test_an_f16_prebuilt_id_is_refused_before_any_request_naming_the_f32_id(rel, chat, tiny_folder):
    before = len(rel.seen_requests())

    async def go():
        with pytest.raises(ShaderF16Unavailable) as e:
            await chat.load(PREBUILT_F16)
        return e.value
    err = rel.run(go(), timeout=60)
    assert err.code == "no-shader-f16" and PREBUILT_F32 in str(err) and err.detail["f32_variant"] == PREBUILT_F32
    # the log covers the whole browser context, where other tests' pages (a JupyterLab polling its contents
    # API) may still run on other loopback ports: what must not appear is any host off this machine
    outside = [u for u in rel.seen_requests()[before:] if urlparse(u).hostname not in ("127.0.0.1", "localhost")
               and not u.startswith(("data:", "blob:http://127.0.0.1:"))]
    assert outside == []  # nothing fetched from Hugging Face or GitHub
    _next_load_answers(rel, chat, tiny_folder)


def test_the_defaults_pick_f32_compute_without_being_asked(tiny_folder, tmp_path):
    from tiny import TinyLlama

    from webllm_widget.compile.quant.ggml import ggml_quantization
    from webllm_widget.compile.checkpoint import open_checkpoint

    # a prebuilt model named without its quantization gets the q4f32_1 build, which needs no shader-f16
    rec = models.resolve("SmolLM2-360M-Instruct")
    assert rec.model_id == PREBUILT_F32 and f16_requirements(rec) == {}
    assert f16_requirements(models.resolve(PREBUILT_F16)) == {"required_features": ["shader-f16"],
                                                              "f32_variant": PREBUILT_F32}
    # a Hugging Face folder builds as q4f32_1 by default; a GGUF (the built-in model) keeps its blocks, f32 compute
    assert f16_requirements(models.resolve(tiny_folder)) == {}
    ckpt = open_checkpoint(TinyLlama.make(seed=1).write_gguf(tmp_path / "t.gguf"))
    assert ggml_quantization(ckpt).compute_dtype == "float32"
