"""Damaged model files: a weight shard with one flipped byte, a truncated shard, a wrong-size library.

Each is caught by size or sha256 before web-llm reads it, reported as ``bad-artifact`` naming the file;
a damaged copy in the page's Cache Storage is evicted, and the next load fetches a good one.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from webllm_widget.cache import sha256_file
from webllm_widget.errors import BadArtifact
from webllm_widget.models.folder import folder_model

from rel_host import copy_model

pytestmark = pytest.mark.browser

SHARD = "params_shard_0.bin"
WASM = "model.wasm"


def _variant(src: Path, dst: Path) -> Path:
    """A copy with a folder key of its own (its config gains a field), so the page has none of it under that key."""
    copy_model(src, dst)
    cfg = json.loads((dst / "mlc-chat-config.json").read_text())
    cfg["reliability_copy"] = dst.name
    (dst / "mlc-chat-config.json").write_text(json.dumps(cfg, indent=1))
    man = json.loads((dst / "manifest.json").read_text())
    man["files"]["mlc-chat-config.json"] = {"sha256": sha256_file(dst / "mlc-chat-config.json"),
                                            "size": (dst / "mlc-chat-config.json").stat().st_size}
    (dst / "manifest.json").write_text(json.dumps(man, indent=1))
    return dst


def _forget_blob(rel, sha: str) -> None:
    """The page forgets its content-addressed copy of one blob (so the kernel's bytes travel again)."""
    rel.page.evaluate("""async (sha) => {
      const c = await caches.open('webllm-widget/blobs');
      await c.delete('https://webllm-widget.invalid/blobs/' + sha);
      globalThis.__webllmWidgetBlobs?.bytes.delete(sha);
    }""", sha)


@pytest.fixture(scope="module")
def chat(rel, tiny_folder):
    return rel.chat(tiny_folder, temperature=0, max_tokens=3)


def _flip(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x01
    p.write_bytes(bytes(b))


DAMAGES = {
    "shard-one-flipped-byte": (SHARD, _flip),
    "shard-truncated": (SHARD, lambda p: p.write_bytes(p.read_bytes()[:-1000])),
    "library-wrong-size": (WASM, lambda p: p.write_bytes(p.read_bytes() + b"\0" * 4096)),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_file_in_the_folder_is_named_before_use_and_a_good_copy_loads_after(
        rel, chat, tiny_folder, tmp_path, damage):
    name, hurt = DAMAGES[damage]
    folder = _variant(tiny_folder, tmp_path / f"tiny-{damage}")
    good_bytes = (folder / name).read_bytes()
    hurt(folder / name)
    _forget_blob(rel, sha256_file(tiny_folder / name))

    async def bad_load():
        with pytest.raises(BadArtifact) as e:
            await chat.load(str(folder))
        return e.value
    err = rel.run(bad_load(), timeout=120)
    assert err.code == "bad-artifact" and name in str(err), str(err)
    assert chat.status == "error" and chat.error["code"] == "bad-artifact"
    shown = rel.dom_until(chat, "root.querySelector('.wlw-error')?.textContent || ''", lambda t: name in t)
    assert name in shown, shown

    # the file is repaired: the same widget loads the folder and answers like the intact model
    (folder / name).write_bytes(good_bytes)

    async def good_load():
        await chat.load(str(folder))
        return await chat.complete([{"role": "user", "content": "hello"}], temperature=0, max_tokens=4)
    r = rel.run(good_load(), timeout=300)
    assert chat.status == "ready" and r["choices"][0]["finish_reason"] in ("length", "stop")


def test_a_damaged_copy_in_the_page_cache_is_evicted_and_the_reload_fetches_a_good_one(rel, tiny_folder):
    key = folder_model(tiny_folder).spec["key"]
    base = f"https://webllm-widget.invalid/m/{key}/resolve/main/"
    # the page holds the intact model (rel's first Chat loaded it); damage two cached files in place
    rel.chat(tiny_folder, max_tokens=2)
    rel.page.evaluate("""async ([base, shard, wasm]) => {
      const put = async (scope, name, edit) => {
        const c = await caches.open(scope);
        const r = await c.match(base + name);
        if (!r) throw new Error('not cached: ' + name);
        await c.put(base + name, new Response(edit(new Uint8Array(await r.arrayBuffer()))));
      };
      await put('webllm/model', shard, (b) => { b[b.length >> 1] ^= 1; return b; });
      await put('webllm/wasm', wasm, (b) => b.slice(0, b.length - 1000));
    }""", [base, SHARD, WASM])
    rel.host.open_page()  # a reload: the new page's engine must read the cache again

    chat = rel.chat(tiny_folder, ready=False, temperature=0, max_tokens=4)
    sent = chat.bytes_sent

    async def first():
        with pytest.raises(BadArtifact) as e:
            await chat.ready(timeout=300)
        return e.value
    err = rel.run(first(), timeout=320)
    assert err.code == "bad-artifact" and SHARD in str(err) and WASM in str(err), str(err)
    assert sorted(err.detail["files"]) == sorted([SHARD, WASM])
    evicted = rel.page.evaluate("""async ([base, shard, wasm]) => [
      !(await (await caches.open('webllm/model')).match(base + shard)),
      !(await (await caches.open('webllm/wasm')).match(base + wasm))]""", [base, SHARD, WASM])
    assert evicted == [True, True]

    async def again():
        await chat.load()
        return await chat.ask("hello")
    text = rel.run(again(), timeout=300)
    assert chat.status == "ready" and chat.messages[-1]["content"] == text
    # exactly the two evicted files travelled again, from the kernel
    assert chat.bytes_sent - sent == (tiny_folder / SHARD).stat().st_size + (tiny_folder / WASM).stat().st_size


def test_each_model_file_is_hashed_once_on_its_way_into_the_page(rel, tiny_folder, tmp_path):
    """The blob loader checks each file's sha256 as it arrives; installing it for web-llm must not hash it again
    (it did: ~0.2 s more per 128 MB). Counted by wrapping the page's real WebCrypto digest (it still runs)."""
    chat = rel.chat(tiny_folder, temperature=0, max_tokens=3)  # on the current page (an earlier test reloads it)
    folder = _variant(tiny_folder, tmp_path / "tiny-hash-once")
    files = json.loads((folder / "manifest.json").read_text())["files"]
    for f in files.values():
        _forget_blob(rel, f["sha256"])  # every byte travels from the kernel
    rel.page.evaluate("""() => {
      const subtle = crypto.subtle, real = SubtleCrypto.prototype.digest;
      globalThis.__digests = [];
      subtle.digest = async function (alg, data) {
        const out = await real.call(subtle, alg, data);
        globalThis.__digests.push(Array.from(new Uint8Array(out), (b) => b.toString(16).padStart(2, '0')).join(''));
        return out;
      };
    }""")
    sent = chat.bytes_sent
    try:
        async def go():
            await chat.load(str(folder))
            return await chat.ask("hello")
        text = rel.run(go(), timeout=300)
        digests = rel.page.evaluate("globalThis.__digests")
    finally:
        rel.page.evaluate("() => { delete crypto.subtle.digest; delete globalThis.__digests; }")
    assert chat.status == "ready" and chat.messages[-1]["content"] == text
    travelled = {name: f for name, f in files.items() if f["sha256"] in digests}
    assert {SHARD, WASM, "mlc-chat-config.json"} <= set(travelled), sorted(travelled)
    assert chat.bytes_sent - sent >= sum(f["size"] for f in travelled.values())
    counts = {name: digests.count(f["sha256"]) for name, f in travelled.items()}
    assert set(counts.values()) == {1}, counts
