"""The model catalogue: the built-in offline default, MLC's prebuilt zoo (online), local folders and URLs.

    from webllm_widget import models
    folder = models.default()                       # built-in SmolLM2-135M-Instruct, built once, cached
    rec = models.resolve("SmolLM2-360M-Instruct-q4f16_1-MLC")   # prebuilt: the page fetches it (internet)
    rec = models.resolve("path/to/model-folder")    # a folder with mlc-chat-config.json
    rec = models.resolve("model.gguf")              # a GGUF or HF folder: compiled first (cached)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import BadModel
from .builtin import BUILTIN_NAME, DEFAULT_GGUF_MEMBER, DEFAULT_WHEEL, GGUF_ENV, default_gguf

__all__ = ["ModelRecord", "default", "default_gguf", "resolve", "prebuilt_ids",
           "DEFAULT_WHEEL", "DEFAULT_GGUF_MEMBER", "GGUF_ENV", "BUILTIN_NAME"]


@dataclass(frozen=True)
class ModelRecord:
    """Where a model comes from. ``kind``: ``"folder"`` (local, built or given), ``"prebuilt"`` (MLC zoo id,
    fetched by the page), or ``"url"`` (a web-llm folder served elsewhere, with its library URL)."""

    kind: str
    model_id: str
    folder: Path | None = None
    url: str | None = None
    model_lib: str | None = None

    def web_llm_record(self, base_url: str | None = None) -> dict[str, Any]:
        """The entry of web-llm's ``appConfig.model_list`` (``base_url`` serves a local folder)."""
        if self.kind == "prebuilt":
            return {"model_id": self.model_id, "prebuilt": True}
        if self.kind == "url":
            return {"model": self.url, "model_id": self.model_id, "model_lib": self.model_lib}
        if base_url is None:
            raise ValueError("a local folder needs the base URL it is served from")
        lib = self.model_lib or "model.wasm"
        base = base_url.rstrip("/") + "/"
        # web-llm appends resolve/main/ to `model` (the Hugging Face layout)
        return {"model": base, "model_id": self.model_id, "model_lib": base + "resolve/main/" + lib}


@lru_cache(maxsize=1)
def prebuilt_ids() -> dict[str, dict]:
    """MLC prebuilt model ids web-llm 0.2.85 knows, with their VRAM needs."""
    doc = json.loads((Path(__file__).with_name("prebuilt.json")).read_text())
    return {m["id"]: m for m in doc["models"]}


def default(gguf: str | os.PathLike | None = None, *, quantization: Any = None, device: str = "webgpu",
            out: str | os.PathLike | None = None, progress: bool = True, schedule: str = "auto") -> Path:
    """The built-in model's folder (SmolLM2-135M-Instruct, lossless GGUF weights, f32 compute), built once.

    A second call finds the cached folder and does no work. Installed from a wheel, the compiled library
    comes from the wheel (see :mod:`.packaged`) when its key matches, so only the weights are converted.
    The folder is named ``SmolLM2-135M-Instruct-<quantization>-<device>-<key>`` (:data:`BUILTIN_NAME`).
    """
    from ..compile.pipeline import build_model_folder
    from . import packaged

    source = default_gguf(gguf, progress=progress)
    q = getattr(quantization, "name", quantization)
    if q in (None, "ggml") and device == "cpu":
        packaged.seed_cache(source, ("cpu", "cpu-relaxed-simd"))
    elif q in (None, "ggml") and schedule in (packaged.WEBGPU_SCHEDULE, packaged.FALLBACK_SCHEDULE):
        packaged.seed_cache(source, ("webgpu" if schedule == packaged.WEBGPU_SCHEDULE else "webgpu-fallback",))
    return build_model_folder(source, quantization=quantization, device=device, out=out, progress=progress,
                              schedule=schedule, name=BUILTIN_NAME)


def resolve(model: str | os.PathLike | None = None, *, progress: bool = True, schedule: str = "auto") -> ModelRecord:
    """Turn what a user passes as ``model=`` into a :class:`ModelRecord`.

    ``None``/``"default"``: the built-in model. A folder with ``mlc-chat-config.json``: used as is.
    A ``.gguf`` file or an HF folder (``config.json``): compiled first (cached). An ``http(s)`` URL of a
    web-llm folder: used as is (its library must be ``<url>/resolve/main/model.wasm`` or given via
    ``"URL|LIB_URL"``). Otherwise an MLC prebuilt id known to web-llm 0.2.85; a prebuilt name without its
    quantization (``"SmolLM2-360M-Instruct"``) picks the ``q4f32_1`` build, which needs no ``shader-f16``.
    ``schedule`` is passed to the build (``"fallback"`` suits software adapters such as SwiftShader).
    """
    if model is None or str(model) == "default":
        folder = default(progress=progress, schedule=schedule)
        return ModelRecord("folder", folder.name, folder=folder, model_lib="model.wasm")
    text = str(model)
    if text.startswith(("http://", "https://")):
        url, _, lib = text.partition("|")
        url = url.rstrip("/")
        return ModelRecord("url", url.rsplit("/", 1)[-1], url=url,
                           model_lib=lib or f"{url}/resolve/main/model.wasm")
    p = Path(text).expanduser()
    if p.is_dir() and (p / "mlc-chat-config.json").exists():
        from .folder import RELAXED_SIMD_LIBRARY  # a CPU folder's relaxed-SIMD build sits beside model.wasm

        libs = sorted(f for f in p.glob("*.wasm") if f.name != RELAXED_SIMD_LIBRARY)
        if len(libs) != 1:
            raise BadModel(f"{p}: a model folder needs exactly one model library (.wasm), found {len(libs)}. "
                           "Rebuild it with `webllm-widget build`.")
        return ModelRecord("folder", p.name, folder=p, model_lib=libs[0].name)
    if p.exists():
        from ..compile.pipeline import build_model_folder

        folder = build_model_folder(p, progress=progress, schedule=schedule)
        return ModelRecord("folder", folder.name, folder=folder, model_lib="model.wasm")
    if text in prebuilt_ids():
        return ModelRecord("prebuilt", text)
    if f"{text}-q4f32_1-MLC" in prebuilt_ids():
        # a prebuilt model named without its quantization: the f32-compute build runs on every adapter
        # (q4f16_1 needs shader-f16, which software adapters and some drivers lack)
        return ModelRecord("prebuilt", f"{text}-q4f32_1-MLC")
    close = [m for m in prebuilt_ids() if text.lower() in m.lower()][:5]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise BadModel(f"unknown model {text!r}: not a file or folder, and not an MLC prebuilt id.{hint} "
                   "Pass a .gguf file, a Hugging Face folder, a model folder, or a prebuilt id.")
