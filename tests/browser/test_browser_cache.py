"""The browser's model cache, managed from the widget and from Python, in real headless Chromium with the tiny model:
listing with sizes, deleting (the next load copies the files again, counted by ``bytes_sent``), and a Cache Storage
write past the origin's quota (made tiny through Chromium's DevTools ``Storage.overrideQuotaForOrigin``) ending in
``StorageQuotaExceeded`` with what to delete, nothing of the model left cached, and a load that works once space is
freed."""
from __future__ import annotations

import json
import shutil

import pytest

from webllm_widget import Chat, StorageQuotaExceeded

pytestmark = pytest.mark.browser

MB = 1 << 20

# every Cache Storage URL of this origin (model files, index, blobs)
ALL_URLS = """async () => { const out = []; for (const n of await caches.keys()) {
    for (const r of await (await caches.open(n)).keys()) out.push(n + ' ' + r.url); } return out; }"""


def _files_bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name != "manifest.json")


def _load(host, folder):
    async def go():
        chat = Chat(model=str(folder), device="webgpu", max_tokens=2)
        await chat.ready(timeout=300)
        return chat
    return host.run(go())


def _run(host, coro):
    return host.run(coro, timeout=200)


def test_cache_lists_deletes_and_a_full_quota_ends_in_storage_quota_exceeded(widget_host, tiny_folder, tmp_path):
    widget_host.page.evaluate("async () => { for (const n of await caches.keys()) await caches.delete(n); }")
    widget_host.open_page()  # a fresh page with an empty cache
    tiny_bytes = _files_bytes(tiny_folder)

    chat = _load(widget_host, tiny_folder)
    assert chat.bytes_sent > tiny_bytes  # the engine bundle and the model
    cached = _run(widget_host, chat.cache.list())
    folders = [m for m in cached if m["kind"] == "folder"]
    assert len(folders) == 1 and folders[0]["bytes"] == tiny_bytes, cached
    tiny_url = folders[0]["url"]
    assert folders[0]["id"] == chat._loaded and folders[0]["files"] == len(list(tiny_folder.glob("*"))) - 1
    assert any(m["kind"] == "blobs" for m in cached)  # the engine bundle
    usage = _run(widget_host, chat.cache.usage())
    assert usage["usage"] >= tiny_bytes and usage["quota"] > usage["usage"] and usage["persisted"] in (True, False)
    assert _run(widget_host, chat.cache.persist()) in (True, False)

    # deleted in the widget's Storage panel: gone from the list
    page = widget_host.page
    page.click(".wlw-chat .wlw-storage summary")
    row = page.locator(f".wlw-chat .wlw-cache-row[data-url='{tiny_url}']")
    row.wait_for(timeout=30_000)
    assert row.locator(".wlw-cache-size").text_content().startswith(f"{tiny_bytes / MB:.1f} MB")
    assert "used" in page.text_content(".wlw-chat .wlw-storage-usage")
    row.locator(".wlw-cache-delete").click()
    row.wait_for(state="detached", timeout=30_000)
    assert page.text_content(".wlw-chat .wlw-storage-message").startswith("Deleted ")
    assert not [m for m in _run(widget_host, chat.cache.list()) if m["kind"] == "folder"]
    with pytest.raises(ValueError, match="not cached"):  # from Python, by the folder as passed to Chat
        _run(widget_host, chat.cache.delete(tiny_folder))

    # a second model cached (the same files but its config: another key)
    other = tmp_path / "tiny-other"
    shutil.copytree(tiny_folder, other)
    (other / "manifest.json").unlink()
    cfg = json.loads((other / "mlc-chat-config.json").read_text())
    cfg["temperature"] = 0.5
    (other / "mlc-chat-config.json").write_text(json.dumps(cfg))
    other_chat = _load(widget_host, other)
    assert other_chat.bytes_sent == _files_bytes(other)

    # a new page under a quota a little above what is stored, less than the tiny model needs
    widget_host.open_page()
    page = widget_host.page
    cdp = page.context.new_cdp_session(page)
    origin = widget_host.server.origin
    used = page.evaluate("async () => (await navigator.storage.estimate()).usage")
    cdp.send("Storage.overrideQuotaForOrigin", {"origin": origin, "quotaSize": used + 2 * MB})
    try:
        async def too_big():
            c = Chat(model=str(tiny_folder), device="webgpu")
            try:
                await c.ready(timeout=300)
            except StorageQuotaExceeded as e:
                return c, e
            raise AssertionError("the load fitted the quota")
        chat, err = widget_host.run(too_big())
        assert 0 < chat.bytes_sent < tiny_bytes  # deleted, so copied again: until the quota stopped it
        assert err.code == "storage-quota" and "Nothing of it was kept" in str(err)
        offered = [m["id"] for m in err.detail["cached"]]
        assert other_chat._loaded in offered and other_chat._loaded in str(err), err
        assert chat.status == "error" and chat.error["code"] == "storage-quota"
        page.wait_for_function("() => (document.querySelector('.wlw-chat .wlw-error')?.textContent ?? '')"
                               ".startsWith('[storage-quota]')")
        left = [u for u in page.evaluate(ALL_URLS) if tiny_url in u]
        assert not left, left  # nothing half-written stays cached

        # space freed by deleting the model the error named: the next load works and copies every file
        gone = _run(widget_host, chat.cache.delete(other_chat._loaded))
        assert [m["bytes"] for m in gone] == [_files_bytes(other)]
        sent = chat.bytes_sent

        async def again():
            return await chat.load()
        report = widget_host.run(again(), timeout=300)
        assert report["model"] == chat._loaded and chat.status == "ready" and chat.bytes_sent - sent == tiny_bytes
        assert [m["url"] for m in _run(widget_host, chat.cache.list()) if m["kind"] == "folder"] == [tiny_url]
        # and everything goes at once (models, index, engine bundle)
        cleared = _run(widget_host, chat.cache.clear())
        assert {m["kind"] for m in cleared} == {"folder", "blobs"} and _run(widget_host, chat.cache.list()) == []
        assert page.evaluate(ALL_URLS) == []
    finally:
        cdp.send("Storage.overrideQuotaForOrigin", {"origin": origin})
