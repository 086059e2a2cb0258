"""Which device runs a model in the page: WebGPU, the page's CPU (wasm SIMD), or "auto" (the page decides).

The page knows its adapter; Python knows the model folders. So for ``device="auto"`` Python sends both
builds of the model (the WebGPU folder and, where one can be built, the CPU folder) and the page's engine
picks: WebGPU on a hardware adapter, the CPU when there is no adapter or it is a software fallback
(``isFallbackAdapter``, e.g. SwiftShader), and says why. Files are offered as content-addressed blobs, so
only the chosen build's bytes ever travel.

    spec, paths = model_spec("default", "auto")   # spec for the page's engine; paths: sha256 -> file
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .errors import BadModel, WebLLMWidgetError

DEVICES = ("auto", "webgpu", "cpu")
log = logging.getLogger(__name__)


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise BadModel(f"device {device!r} is not one of {', '.join(DEVICES)}: use 'auto' (WebGPU on a hardware "
                       "GPU, else the CPU), 'webgpu' or 'cpu'.")
    return device


def model_spec(model: Any = None, device: str = "auto", *, progress: bool = True) -> tuple[dict, dict[str, Path]]:
    """The engine spec for ``model`` on ``device`` and the files it names (sha256 -> path).

    ``model``: as for ``Chat(model=...)``. ``device="cpu"`` needs a model that can be built for the CPU
    (the built-in one, a GGUF file, a Hugging Face folder, or a folder built by webllm-widget from one);
    MLC prebuilt ids and URLs run on WebGPU only. Raises BadModel otherwise.
    """
    from . import models as registry
    from .compile.cpu import cpu_model_folder
    from .runner import folder_model

    check_device(device)
    key = None if model is None or str(model) == "default" else model
    if device == "cpu":
        folder = cpu_model_folder(key, progress=progress)
        if folder is None:
            raise BadModel(f"{model}: no CPU build of this model is possible (MLC prebuilt ids and URLs run on "
                           "WebGPU only). Pass a .gguf file or a Hugging Face folder, or use device='webgpu'.")
        fm = folder_model(folder)
        return dict(fm.spec, device="cpu"), dict(fm.paths)
    if device == "auto" and key is not None and _folder_device(key) == "cpu":
        # a folder built for the CPU runs on the CPU only; the page still reports why (no adapter, ...)
        spec, paths = model_spec(model, "cpu", progress=progress)
        return dict(spec, device="auto", webgpu=False, cpu=spec), paths
    if device == "webgpu" and key is not None and _folder_device(key) == "cpu":
        raise BadModel(f"{model} was built for the CPU (device='cpu'); build the model for WebGPU or use "
                       "device='cpu' or 'auto'.")
    rec = registry.resolve(key, progress=progress)
    paths: dict[str, Path] = {}
    if rec.kind == "prebuilt":
        spec: dict = {"id": rec.model_id, "prebuilt": True}
    elif rec.kind == "url":
        spec = {"id": rec.model_id, "url": rec.url.rstrip("/") + "/", "lib_url": rec.model_lib}
    else:
        fm = folder_model(rec.folder, model_id=rec.model_id)
        spec = dict(fm.spec)
        paths.update(fm.paths)
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
            spec["cpu"] = dict(cfm.spec, device="cpu")
            paths.update(cfm.paths)
    return spec, paths


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
    import json
    import re

    from . import models as registry

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


def _folder_device(model: Any) -> str | None:
    """The device a model folder was built for (its manifest), or None for anything else."""
    import json

    p = Path(str(model)).expanduser()
    try:
        return json.loads((p / "manifest.json").read_text()).get("device") if p.is_dir() else None
    except (OSError, ValueError):
        return None


def spec_files(spec: dict) -> list[dict]:
    """Every file a spec names, its CPU alternative's included (each once)."""
    seen, out = set(), []
    for f in list(spec.get("files", [])) + list((spec.get("cpu") or {}).get("files", [])):
        if f["sha256"] not in seen:
            seen.add(f["sha256"])
            out.append(f)
    return out
