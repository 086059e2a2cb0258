"""Out of GPU memory: a model folder whose KV cache is far beyond the adapter's maxBufferSize must fail with
a clear error, release what it took, and a smaller model must load after."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from webllm_widget.cache import sha256_file
from webllm_widget.errors import OutOfGPUMemory, WebLLMWidgetError

from .conftest import copy_model

pytestmark = pytest.mark.browser


def _oversized(src: Path, dst: Path, context: int) -> Path:
    copy_model(src, dst)
    cfg = json.loads((dst / "mlc-chat-config.json").read_text())
    cfg["context_window_size"] = context
    (dst / "mlc-chat-config.json").write_text(json.dumps(cfg, indent=1))
    man = json.loads((dst / "manifest.json").read_text())
    man["files"]["mlc-chat-config.json"] = {"sha256": sha256_file(dst / "mlc-chat-config.json"),
                                            "size": (dst / "mlc-chat-config.json").stat().st_size}
    (dst / "manifest.json").write_text(json.dumps(man, indent=1))
    return dst


def test_a_kv_cache_beyond_max_buffer_size_fails_clearly_and_a_small_model_loads_after(rel, tiny_folder, tmp_path):
    # 2 layers x K,V x 2 KV heads x 16 dims x 4 bytes = 512 B a token: 2^24 tokens = 8 GiB, 8x maxBufferSize
    big = _oversized(tiny_folder, tmp_path / "tiny-huge-context", 1 << 24)
    chat = rel.chat(tiny_folder, temperature=0, max_tokens=4)

    async def go():
        with pytest.raises(WebLLMWidgetError) as e:
            await chat.load(str(big))
        err = e.value
        await chat.load(str(tiny_folder))
        text = await chat.ask("hello")
        return err, text
    err, text = rel.run(go(), timeout=300)
    assert isinstance(err, OutOfGPUMemory) and err.code == "out-of-memory", str(err)
    assert err.detail["needed_bytes"] > err.detail["max_buffer_size"] and err.detail["context_window_size"] == 1 << 24
    assert "context_window_size" in str(err)
    assert chat.status == "ready" and chat.messages[-1]["content"] == text
