"""Out of GPU memory: a model whose KV cache cannot be one GPU buffer per layer must fail with a clear error
before anything is allocated, a buffer the GPU refuses must release what the load took, and a smaller model
must load after.

The page's engine checks the KV cache against the adapter's buffer limits (and the wasm32 runtime's 32-bit
buffer size) for every model before web-llm allocates anything: a local folder, the same folder served by URL,
a prebuilt id (test_prebuilt_by_id.py). A buffer no config announces (a weight record whose shape is beyond
maxBufferSize) still goes to the GPU: Dawn refuses it, web-llm destroys the device (every buffer with it).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from webllm_widget.cache import sha256_file
from webllm_widget.errors import BadArtifact, OutOfGPUMemory, WebLLMWidgetError

from rel_host import copy_model

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


def test_a_url_model_whose_kv_cache_is_4_gib_a_layer_is_refused_before_loading_and_the_loaded_model_stays(
        rel, tiny_folder, tmp_path, file_server):
    # 2^23 tokens x 512 B = 2^32 bytes a layer (+ one page): the wasm32 runtime's 32-bit size wrapped it to an
    # 8 KiB buffer, and the model "loaded" and answered from it. Refused now from the config, as a local folder is.
    per_token = _kv_bytes_per_token_and_layer(tiny_folder)
    context = (1 << 32) // per_token
    url = file_server.add("kv-4gib", _oversized(tiny_folder, tmp_path / "tiny-4gib-kv", context))
    chat = rel.chat(tiny_folder, temperature=0, max_tokens=4)
    before = rel.run(chat.ask("hello"), timeout=300)

    async def go():
        with pytest.raises(WebLLMWidgetError) as e:
            await chat.load(url)
        await chat.load(str(tiny_folder))
        chat.reset()
        return e.value, await chat.ask("hello")
    err, text = rel.run(go(), timeout=300)
    assert isinstance(err, OutOfGPUMemory) and err.code == "out-of-memory", str(err)
    assert err.detail["needed_bytes"] >= 1 << 32 and err.detail["context_window_size"] == context
    assert err.detail["max_tokens"] * per_token <= err.detail["limit_bytes"]
    assert "context_window_size" in str(err) and "sliding_window_size" in str(err)
    assert file_server.hits("/kv-4gib/resolve/main/mlc-chat-config.json") == 1  # read once, by the check
    assert file_server.hits("/kv-4gib/") == 1  # nothing else fetched: no library, no shard
    assert text == before and chat.status == "ready"


def test_a_url_model_whose_kv_cache_exceeds_max_buffer_size_is_refused_with_the_context_that_fits(
        rel, tiny_folder, tmp_path, file_server):
    max_buffer = rel.page.evaluate("async () => (await navigator.gpu.requestAdapter()).limits.maxBufferSize")
    per_token = _kv_bytes_per_token_and_layer(tiny_folder)
    context = (3 * max_buffer // 2) // per_token  # 1.5x the largest buffer a layer, below 2^32
    url = file_server.add("kv-1.5x", _oversized(tiny_folder, tmp_path / "tiny-1.5x-kv", context))
    chat = rel.chat(tiny_folder, temperature=0, max_tokens=4)

    async def go():
        with pytest.raises(WebLLMWidgetError) as e:
            await chat.load(url)
        return e.value
    err = rel.run(go(), timeout=300)
    assert isinstance(err, OutOfGPUMemory) and err.code == "out-of-memory", str(err)
    assert err.detail["needed_bytes"] > err.detail["max_buffer_size"] == max_buffer
    fits = err.detail["max_tokens"]
    assert 0 < fits < context and (fits // 16 + 1) * 16 * per_token <= max_buffer < (fits // 16 + 3) * 16 * per_token
    assert file_server.hits("/kv-1.5x/") == 1


def _with_padding(folder: Path, nbytes: int) -> Path:
    """Add an unused ``nbytes`` weight record (its own shard): web-llm uploads every record to the GPU before it
    creates the KV cache, so a load that fails there holds that much GPU memory unless it is released."""
    (folder / "params_shard_pad.bin").write_bytes(bytes(nbytes))
    tc = json.loads((folder / "tensor-cache.json").read_text())
    tc["records"].append({"dataPath": "params_shard_pad.bin", "format": "raw-shard", "nbytes": nbytes, "records": [
        {"name": "padding", "shape": [nbytes // 4], "dtype": "float32", "format": "raw", "nbytes": nbytes,
         "byteOffset": 0}]})
    (folder / "tensor-cache.json").write_text(json.dumps(tc))
    return folder


def _gpu_process_rss(profile: str) -> int:
    """Resident bytes of the GPU process of the Chromium whose profile dir is ``profile`` (SwiftShader keeps GPU
    buffers in its memory). Other browsers may be running: the suite's no-WebGPU Chromium, other test runs."""
    parents, rss, cmds, gpu = {}, {}, {}, []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            status = (d / "status").read_text()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid = int(d.name)
        parents[pid] = int(fields["PPid"])
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
        cmds[pid] = cmd
        if b"--type=gpu-process" in cmd:
            gpu.append(pid)
    marker = f"--user-data-dir={profile}".encode()

    def ours(pid: int) -> bool:  # a child of this browser's main process (its command line names the profile)
        while pid > 1:
            if marker in cmds.get(pid, b"").split(b"\0"):
                return True
            pid = parents.get(pid, 1)
        return False
    mine = [p for p in gpu if ours(p)]
    assert len(mine) == 1, (mine, gpu)
    return rss[mine[0]]


def _kv_bytes_per_token_and_layer(folder: Path) -> int:
    mc = json.loads((folder / "mlc-chat-config.json").read_text())["model_config"]
    head_dim = mc.get("head_dim") or mc["hidden_size"] // mc["num_attention_heads"]
    return 2 * mc["num_key_value_heads"] * head_dim * 4  # K and V, float32


def _with_record_beyond(folder: Path, nbytes: int) -> Path:
    """Add a weight record whose shape needs ``nbytes`` on the GPU (its data is 4 bytes): the buffer web-llm
    creates for it is what the GPU refuses. No config value announces it, so no pre-check can see it."""
    (folder / "params_shard_huge.bin").write_bytes(bytes(4))
    tc = json.loads((folder / "tensor-cache.json").read_text())
    tc["records"].append({"dataPath": "params_shard_huge.bin", "format": "raw-shard", "nbytes": 4, "records": [
        {"name": "huge", "shape": [nbytes // 4], "dtype": "float32", "format": "raw", "nbytes": 4, "byteOffset": 0}]})
    (folder / "tensor-cache.json").write_text(json.dumps(tc))
    return folder


def test_a_weight_buffer_the_gpu_refuses_fails_the_load_frees_its_memory_and_a_small_model_loads_after(
        rel, tiny_folder, tmp_path, file_server):
    max_buffer = rel.page.evaluate("async () => (await navigator.gpu.requestAdapter()).limits.maxBufferSize")
    pad = 128 << 20  # on the GPU before the big buffer fails: what a failed load must give back
    folder = _with_padding(copy_model(tiny_folder, tmp_path / "tiny-huge-record"), pad)
    url = file_server.add("record-too-big", _with_record_beyond(folder, 3 * max_buffer // 2))
    chat = rel.chat(tiny_folder, temperature=0, max_tokens=4)

    async def fail():
        with pytest.raises(WebLLMWidgetError) as e:
            await chat.load(url)
        return e.value
    errors, rss = [], []
    for _ in range(3):  # the same failure again and again: nothing left behind breaks or fills the next one
        errors.append(rel.run(fail(), timeout=300))
        rss.append(_gpu_process_rss(rel.chromium.profile))

    async def good():
        await chat.load(str(tiny_folder))
        return await chat.ask("hello")
    text = rel.run(good(), timeout=300)
    for err in errors:  # web-llm creates the buffer (refused: it destroys the device), then tvmjs finds 4 bytes
        assert isinstance(err, BadArtifact) and err.code == "bad-artifact", str(err)
        assert "nbytes" in str(err) and "damaged" in str(err)
    assert file_server.hits("/record-too-big/resolve/main/params_shard_huge.bin") >= 1  # web-llm got that far
    # each failed load had `pad` bytes of weights on the GPU; kept, they would add up load after load. A destroyed
    # device's memory goes back when Chromium collects it, which can lag the error by a moment: wait for it (a
    # leak never gets there: two kept pads are 2 * pad above the first measure)
    deadline = time.monotonic() + 20
    while rss[-1] - rss[0] >= pad // 2 and time.monotonic() < deadline:
        rel.page.wait_for_timeout(500)
        rss.append(_gpu_process_rss(rel.chromium.profile))
    assert rss[-1] - rss[0] < pad // 2, [r >> 20 for r in rss]
    assert chat.status == "ready" and chat.messages[-1]["content"] == text and chat.error == {}
