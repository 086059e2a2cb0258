"""The models the browser keeps for the notebook page (Cache Storage), managed from Python: ``chat.cache``.

    await chat.cache.list()          # [{"id", "url", "kind", "bytes", "files", ...}], largest first
    await chat.cache.usage()         # {"usage", "quota", "persisted"} (navigator.storage.estimate())
    await chat.cache.delete("default")    # a model id, folder, prebuilt id, page id, key or URL; returns what went
    await chat.cache.clear()         # every cached model and the engine bundle
    await chat.cache.persist()       # asks the browser to keep them (it may say no)

Each call asks the page through the chat's widget, so the widget must be shown. Deleting a model from the cache
does not unload it from the page: the next load in a new page copies (or downloads) it again. The widget's
Storage panel shows the same list. A write that does not fit the browser's quota ends in
:class:`~webllm_widget.errors.StorageQuotaExceeded`, naming what could be deleted.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

#: Seconds a cache operation may take in the page (listing reads every cached response's size).
CACHE_TIMEOUT = 120.0


class BrowserCache:
    """The page's cached models, for one :class:`~webllm_widget.Chat` (every chat on a page sees the same cache)."""

    def __init__(self, chat: Any):  # the Chat (not imported: chat.py imports this module)
        self._chat = chat

    async def _call(self, op: str, **payload: Any) -> dict:
        from ..wire.schema import CALL, ChatCall

        msg, _ = await self._chat._ch.request(CALL, ChatCall(fn="cache", op=op, **payload), timeout=CACHE_TIMEOUT)
        return {k: v for k, v in msg.items() if k not in ("v", "kind", "id")}

    async def list(self) -> list[dict]:
        """The cached models, largest first: ``id`` (model id, or the URL its files are under), ``url``, ``kind``
        (``"folder"``, ``"prebuilt"``, ``"url"``, ``"blobs"`` for the engine bundle), ``bytes``, ``files``."""
        return list((await self._call("list"))["models"])

    async def usage(self) -> dict:
        """``{"usage", "quota", "persisted"}``: the origin's storage estimate (bytes) and whether it is persistent."""
        r = await self._call("list")
        return {k: r.get(k) for k in ("usage", "quota", "persisted")}

    async def delete(self, model: str | Path) -> list[dict]:
        """Delete a cached model: ``"default"`` (the built-in one), a model folder or file as given to ``Chat``, a
        prebuilt id, or an ``id``/``url`` from :meth:`list`. Returns what was deleted; raises ValueError (naming what
        is cached) when nothing matched."""
        targets = _targets(model)
        r = await self._call("delete", targets=targets)
        if not r.get("deleted"):
            cached = ", ".join(m["id"] for m in r.get("models", [])) or "nothing"
            raise ValueError(f"{model!s} is not cached in this browser (cached: {cached}); pass an id or url from "
                             "await chat.cache.list()")
        return list(r["deleted"])

    async def clear(self) -> list[dict]:
        """Delete every cached model and the engine bundle. Returns what was deleted."""
        return list((await self._call("delete", all=True))["deleted"])

    async def persist(self) -> bool:
        """Ask the browser to keep this origin's storage under storage pressure; returns whether it agreed."""
        return bool((await self._call("persist")).get("granted"))


def _targets(model: str | Path) -> list[str]:
    """What the page may know ``model`` by: itself, and for a model the kernel sends as files, the key of each
    build (the URLs its files are cached under); for a prebuilt id, its Hugging Face URL."""
    from ..errors import WebLLMWidgetError
    from ..models import prebuilt_ids

    text = str(model)
    out = [text]
    known = prebuilt_ids().get(text)
    if known and known.get("model"):
        from ..models.picker import describe_prebuilt

        d = describe_prebuilt(text)
        return [*out, d["model"].rstrip("/") + "/resolve/main/", *([d["model_lib"]] if d.get("model_lib") else [])]
    p = Path(text).expanduser()
    if text == "default" or p.exists():
        from ..models.devices import model_spec

        try:
            spec, _ = model_spec(None if text == "default" else text, "auto", progress=False)
        except WebLLMWidgetError:
            return out
        for s in (spec, spec.get("cpu") or {}, spec.get("webgpu_fallback") or {}):
            if s.get("key"):
                out.append(f"https://webllm-widget.invalid/m/{s['key']}/resolve/main/")
    return out
