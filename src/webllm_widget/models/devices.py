"""Which device runs a model in the page: WebGPU, the page's CPU (wasm SIMD), or "auto" (the page decides).

The page knows its adapter; Python knows the model folders. So for ``device="auto"`` Python sends both
builds of the model (the WebGPU folder and, where one can be built, the CPU folder) and the page's engine
picks: WebGPU on a hardware adapter, the CPU when there is no adapter or it is a software fallback
(``isFallbackAdapter``, e.g. SwiftShader), and says why. Files are offered as content-addressed blobs, so
only the chosen build's bytes ever travel.

A model built here from source (the built-in one, a GGUF file, an HF folder) also carries, for WebGPU, its
build with the kernels for software adapters (``spec["webgpu_fallback"]``, schedule "fallback": same weights,
another library); the page uses it when its adapter is a software fallback and says so (``schedule``).

    spec, paths = model_spec("default", "auto")   # spec for the page's engine; paths: sha256 -> file
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from ..errors import BadModel, WebLLMWidgetError
from . import registry
from .folder import folder_model
from ..wire.schema import ModelSpec, PrebuiltHub

DEVICES = ("auto", "webgpu", "cpu")
log = logging.getLogger(__name__)


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise BadModel(f"device {device!r} is not one of {', '.join(DEVICES)}: use 'auto' (WebGPU on a hardware "
                       "GPU, else the CPU), 'webgpu' or 'cpu'.")
    return device


def model_spec(model: Any = None, device: str = "auto", *, progress: bool = True) -> tuple[ModelSpec, dict[str, Path]]:
    """The engine spec for ``model`` on ``device`` and the files it names (sha256 -> path).

    ``model``: as for ``Chat(model=...)``. ``device="cpu"`` needs a model that can be built for the CPU
    (the built-in one, a GGUF file, a Hugging Face folder, or a folder built by webllm-widget from one);
    MLC prebuilt ids and URLs run on WebGPU only. Raises BadModel otherwise.
    """
    check_device(device)
    key = None if model is None or str(model) == "default" else model
    if device == "cpu":
        folder = cpu_model_folder(key, progress=progress)
        if folder is None:
            raise BadModel(f"{model}: no CPU build of this model is possible (MLC prebuilt ids and URLs run on "
                           "WebGPU only). Pass a .gguf file or a Hugging Face folder, or use device='webgpu'.")
        fm = folder_model(folder)
        return fm.spec.replace(device="cpu"), dict(fm.paths)
    if device == "auto" and key is not None and _folder_device(key) == "cpu":
        # a folder built for the CPU runs on the CPU only; the page still reports why (no adapter, ...)
        spec, paths = model_spec(model, "cpu", progress=progress)
        return spec.replace(device="auto", webgpu=False, cpu=spec), paths
    if device == "webgpu" and key is not None and _folder_device(key) == "cpu":
        raise BadModel(f"{model} was built for the CPU (device='cpu'); build the model for WebGPU or use "
                       "device='cpu' or 'auto'.")
    rec = registry.resolve(key, progress=progress)
    paths: dict[str, Path] = {}
    if rec.kind == "prebuilt":
        spec = ModelSpec(id=rec.model_id, prebuilt=True)
        known = registry.prebuilt_ids().get(rec.model_id) or {}
        if known.get("model"):
            # where web-llm fetches it from: the page lists and deletes its cached files by these URLs
            spec["hub"] = PrebuiltHub(model=known["model"], model_lib=known.get("model_lib"))
    elif rec.kind == "url":
        spec = ModelSpec(id=rec.model_id, url=rec.url.rstrip("/") + "/", lib_url=rec.model_lib)
    else:
        fm = folder_model(rec.folder, model_id=rec.model_id)
        spec = fm.spec.replace()
        paths.update(fm.paths)
        if device != "cpu" and (sched := _folder_schedule(rec.folder)):
            spec["schedule"] = sched
    spec["device"] = device
    spec.update(f16_requirements(rec))
    if device == "auto" and rec.kind == "folder":
        try:
            # the built-in model, a GGUF file or an HF folder: built for the CPU too. A model folder built
            # for WebGPU stays on WebGPU (its CPU build would be a second compile the user did not ask for).
            folder = cpu_model_folder(key, progress=progress, from_source=False)
        except WebLLMWidgetError as e:  # no CPU build: the page uses WebGPU, whatever the adapter
            log.warning("no CPU build of %s (%s); it will run on WebGPU only", model, e)
            folder = None
        if folder is not None:
            cfm = folder_model(folder)
            spec["cpu"] = cfm.spec.replace(device="cpu")
            paths.update(cfm.paths)
    if rec.kind == "folder" and "cpu" not in spec and _built_from_source(key):
        fb = _fallback_spec(key, progress=progress)
        if fb is not None:
            spec["webgpu_fallback"], fb_paths = fb
            spec["webgpu_fallback"].update(f16_requirements(rec))
            paths.update(fb_paths)
    return spec, paths


def cpu_model_folder(model: Any = None, *, progress: bool = True, from_source: bool = True) -> Path | None:
    """The CPU build of what a user passes as ``model=`` (built once, cached), or None when there is none.

    ``None``/``"default"``: the built-in SmolLM2 built with ``device="cpu"``. A ``.gguf`` file or a Hugging
    Face folder: built for the CPU. A model folder: itself when its manifest says ``device: cpu``, else the
    CPU build of the source it was built from (``source_path`` in its manifest) when that still exists and
    ``from_source`` (``device="auto"`` passes False: a folder built for WebGPU runs where it was built for).
    Prebuilt MLC ids and URLs have no CPU build (None).
    """
    from ..compile.pipeline import MANIFEST, build_model_folder

    if model is None or str(model) == "default":
        return registry.default(device="cpu", progress=progress)
    text = str(model)
    if text.startswith(("http://", "https://")):
        return None
    p = Path(text).expanduser()
    if p.is_dir() and (p / "mlc-chat-config.json").exists():
        try:
            doc = json.loads((p / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        if doc.get("device") == "cpu":
            return p
        src = doc.get("source_path")
        if from_source and src and Path(src).exists():
            return build_model_folder(src, quantization=doc.get("quantization"), device="cpu", progress=progress)
        return None
    if p.exists():
        return build_model_folder(p, device="cpu", progress=progress)
    return None


def _built_from_source(key: Any) -> bool:
    """Whether resolving ``key`` compiles it here (the built-in model, a GGUF file, an HF folder)."""
    if key is None:
        return True
    text = str(key)
    if text.startswith(("http://", "https://")):
        return False
    p = Path(text).expanduser()
    return p.exists() and not (p.is_dir() and (p / "mlc-chat-config.json").exists())


def _fallback_spec(key: Any, *, progress: bool) -> tuple[ModelSpec, dict[str, Path]] | None:
    """The same model built with the kernels for software adapters (schedule "fallback"), or None.

    Its weights are the same bytes as the default build's (same sha256, so they travel at most once);
    only the library differs. The page loads it instead when its adapter is a software fallback.
    """
    try:
        rec = registry.resolve(key, progress=progress, schedule="fallback")
    except WebLLMWidgetError as e:
        log.warning("no fallback-schedule build of %s (%s); software adapters get the default one", key, e)
        return None
    fm = folder_model(rec.folder, model_id=rec.model_id)
    return fm.spec.replace(device="webgpu", schedule="fallback"), dict(fm.paths)


def _f32_name(quantization: str) -> str:
    """The f32-compute twin of an f16-compute quantization name (q4f16_1 -> q4f32_1, q0f16 -> q0f32)."""
    return quantization.replace("f16", "f32")


def f16_requirements(rec: Any) -> dict:
    """What the page must check before it moves any byte of a model that computes in float16.

    ``{"required_features": ["shader-f16"], "f32_variant": ...}`` for an f16 model (an MLC prebuilt id
    whose quantization computes in f16, or a model folder whose ``mlc-chat-config.json`` says so), else
    ``{}``. ``f32_variant`` names what to use instead: the prebuilt id with f32 compute when web-llm has
    it, or for a folder the quantization to rebuild it with. The page refuses the model with
    ``no-shader-f16`` when its adapter lacks the feature, before installing or fetching anything.
    """
    if rec.kind == "prebuilt":
        m = re.search(r"-(q\d+f16(?:_\d+)?)-", rec.model_id)
        if not m:
            return {}
        twin = rec.model_id.replace(m.group(1), _f32_name(m.group(1)))
        return {"required_features": ["shader-f16"],
                "f32_variant": twin if twin in registry.prebuilt_ids() else None}
    if rec.kind == "folder" and rec.folder is not None:
        try:
            quant = str(json.loads((Path(rec.folder) / "mlc-chat-config.json").read_text()).get("quantization", ""))
        except (OSError, ValueError):
            return {}
        if re.fullmatch(r"q\d+f16(_\d+)?", quant):
            return {"required_features": ["shader-f16"], "f32_variant": _f32_name(quant)}
    return {}


def _folder_schedule(folder: Path) -> str | None:
    """The GPU kernel schedule a model folder's library was built with (its manifest), or None."""
    try:
        return json.loads((Path(folder) / "manifest.json").read_text()).get("schedule")
    except (OSError, ValueError):
        return None


def _folder_device(model: Any) -> str | None:
    """The device a model folder was built for (its manifest), or None for anything else."""
    p = Path(str(model)).expanduser()
    try:
        return json.loads((p / "manifest.json").read_text()).get("device") if p.is_dir() else None
    except (OSError, ValueError):
        return None


def spec_files(spec: dict) -> list[dict]:
    """Every file a spec names, its CPU and fallback-schedule alternatives' included (each once)."""
    seen, out = set(), []
    for f in (list(spec.get("files", [])) + list((spec.get("cpu") or {}).get("files", []))
              + list((spec.get("webgpu_fallback") or {}).get("files", []))):
        if f["sha256"] not in seen:
            seen.add(f["sha256"])
            out.append(f)
    return out
