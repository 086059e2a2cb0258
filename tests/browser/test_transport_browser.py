"""Blobs cross from kernel to a real Chromium page in chunks, arrive intact, and stay in Cache Storage."""
from __future__ import annotations

import hashlib
import time
import types

import numpy as np
import pytest

from webllm_widget.artifacts import CHUNK_SIZE, static_blob
from webllm_widget.errors import BadArtifact
from webllm_widget.widgets.webgpu import WebGPU

pytestmark = pytest.mark.browser

DIGEST_IN_CACHE = """async (sha) => {
  const c = await caches.open('webllm-widget/blobs');
  const r = await c.match(`https://webllm-widget.invalid/blobs/${sha}`);
  if (!r) return null;
  const d = await crypto.subtle.digest('SHA-256', await r.arrayBuffer());
  return Array.from(new Uint8Array(d), b => b.toString(16).padStart(2, '0')).join('');
}"""


def _load_blob(host, payload: bytes, name: str):
    """Offer ``payload`` as a 'library' through the WebGPU widget; the page fetches, verifies and stores it,
    then refuses it as a wasm (it is random bytes). Returns (error, bytes sent, seconds)."""
    fake = types.SimpleNamespace(wasm=payload, sha256=hashlib.sha256(payload).hexdigest(), functions=["main"],
                                 wgsl={}, name=name)

    async def go():
        gpu = WebGPU()
        await gpu.wait_ready()
        t0 = time.perf_counter()
        try:
            await gpu.load(fake)(np.zeros(1, np.float32))
        except BadArtifact as e:
            return e, gpu.bytes_sent, time.perf_counter() - t0
        return None, gpu.bytes_sent, time.perf_counter() - t0

    return host.run(go())


def test_large_blob_arrives_intact_in_cache_storage_and_is_not_sent_again(widget_host):
    widget_host.page.evaluate("() => caches.delete('webllm-widget/blobs')")
    payload = np.random.default_rng(1).integers(0, 256, 20 * CHUNK_SIZE + 12345, dtype=np.uint8).tobytes()
    sha = hashlib.sha256(payload).hexdigest()

    err, sent, secs = _load_blob(widget_host, payload, "random.bin")
    assert err is not None and "not a tvmjs wasm" in str(err)  # verified and stored, then refused as wasm
    assert sent == len(payload) + static_blob("tvmjs.js").size
    assert widget_host.page.evaluate(DIGEST_IN_CACHE, sha) == sha
    print(f"kernel -> page: {sent / secs / 1e6:.1f} MB/s ({sent / 1e6:.1f} MB in {secs:.2f} s)")

    widget_host.open_page()  # a new page: only Cache Storage remembers
    err2, sent2, _ = _load_blob(widget_host, payload, "random.bin")
    assert err2 is not None and sent2 == 0


def test_page_never_stores_a_blob_whose_hash_does_not_match(widget_host):
    payload = b"\x00asm" + bytes(range(256)) * 40
    wrong = hashlib.sha256(payload + b"!").hexdigest()
    fake = types.SimpleNamespace(wasm=payload, sha256=wrong, functions=["main"], wgsl={}, name="tampered.wasm")

    async def go():
        gpu = WebGPU()
        try:
            await gpu.load(fake)(np.zeros(1, np.float32))
        except BadArtifact as e:
            return e
        return None

    err = widget_host.run(go())
    assert err is not None and err.code == "bad-artifact" and wrong in str(err)
    assert widget_host.page.evaluate(DIGEST_IN_CACHE, wrong) is None


def test_tvmjs_bundle_imports_in_a_plain_page(bundle_page):
    name = bundle_page.evaluate("async () => (await import('/static/tvmjs.js')).RUNTIME_NAME")
    assert "tvmjs 0.27" in name
