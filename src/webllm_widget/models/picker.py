"""What the model picker tells about each model before it is picked: download size, memory, and what the page
needs to decide whether it is cached in this browser and whether its adapter can run it.

The kernel knows the files (a model folder's sizes, its config, its largest weight) and web-llm's prebuilt list
(GPU memory, required features, where the page fetches it from); the page knows its adapter and its Cache
Storage. So each picker entry carries the facts below and the page (``js/src/ui/model_facts.ts``) adds
``cached``, ``fits`` and ``why``, picking the build it would load the same way its engine does.

An entry::

    {"id", "label", "kind": "builtin" | "folder" | "prebuilt" | "url",
     "variants": [  # local models: one per build the page may load (WebGPU, CPU, software-adapter kernels)
        {"device": "webgpu" | "cpu", "schedule", "key", "lib", "files": [{"name", "size"}], "size_bytes",
         "weights_bytes", "max_param_bytes", "kv": {...the config keys the KV cache size depends on},
         "required_features"}],
     # prebuilt ids:
     "vram_MB", "model", "model_lib", "required_features", "overrides"}

Memory of a local model is computed in the page from ``weights_bytes`` and ``kv`` (the KV cache at the context
window, by the same rule that refuses a KV cache too large for one GPU buffer): weights plus KV cache, a lower
bound (web-llm's ``vram_required_MB`` of prebuilt models also counts the activations).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .registry import BUILTIN_NAME, prebuilt_ids

__all__ = ["basic_entries", "describe_spec", "describe_prebuilt", "PICKER_PREBUILT"]

#: Shown in the model picker besides the built-in model (online: the page fetches them from Hugging Face).
PICKER_PREBUILT = [
    "SmolLM2-360M-Instruct-q4f32_1-MLC",
    "Qwen2.5-0.5B-Instruct-q4f32_1-MLC",
    "Llama-3.2-1B-Instruct-q4f32_1-MLC",
    "Qwen2.5-1.5B-Instruct-q4f32_1-MLC",
    "Phi-3.5-mini-instruct-q4f32_1-MLC",
]

#: The config keys the KV cache's size depends on (kv_fit.ts reads the same ones).
_KV_KEYS = ("context_window_size", "sliding_window_size", "quantization")
_KV_MODEL_KEYS = ("num_hidden_layers", "num_key_value_heads", "num_attention_heads", "head_dim", "hidden_size")


def basic_entries(model: Any) -> list[dict]:
    """The picker's entries, the built-in model first: names only (facts come with :func:`describe_spec` and
    :func:`describe_prebuilt`)."""
    opts = [{"id": "default", "label": f"{BUILTIN_NAME} (built-in, offline)", "kind": "builtin"}]
    text = str(model) if model is not None else "default"
    if text != "default":
        kind = "prebuilt" if text in prebuilt_ids() else "url" if text.startswith(("http://", "https://")) else "folder"
        opts.append({"id": text, "label": Path(text).name or text, "kind": kind})
    opts += [{"id": m, "label": f"{m} (download)", "kind": "prebuilt"} for m in PICKER_PREBUILT if m != text]
    for o in opts:
        if o["kind"] == "prebuilt":
            o.update(describe_prebuilt(o["id"]))
    return opts


def describe_prebuilt(model_id: str) -> dict:
    """What web-llm's prebuilt list says of ``model_id``: GPU memory, required features, where it comes from."""
    rec = prebuilt_ids().get(model_id)
    if rec is None:
        return {}
    out = {k: rec[k] for k in ("vram_MB", "model", "model_lib", "required_features", "overrides") if k in rec}
    return out


def _variant(spec: dict, paths: dict[str, Path], device: str) -> dict:
    files = spec.get("files") or []
    by_name = {f["name"]: paths.get(f["sha256"]) for f in files}
    weights = max_param = 0
    kv: dict = {}
    try:
        tc = json.loads(by_name["tensor-cache.json"].read_text())  # type: ignore[union-attr]
        for shard in tc.get("records", []):
            weights += int(shard.get("nbytes", 0))
            for r in shard.get("records", []):
                max_param = max(max_param, int(r.get("nbytes", 0)))
    except (KeyError, AttributeError, OSError, ValueError):
        pass
    try:
        cfg = json.loads(by_name["mlc-chat-config.json"].read_text())  # type: ignore[union-attr]
        kv = {k: cfg[k] for k in _KV_KEYS if k in cfg}
        mc = cfg.get("model_config") or {}
        kv["model_config"] = {k: mc[k] for k in _KV_MODEL_KEYS if k in mc}
    except (KeyError, AttributeError, OSError, ValueError):
        pass
    v = {"device": device, "schedule": spec.get("schedule"), "key": spec.get("key"), "lib": spec.get("lib"),
         "files": [{"name": f["name"], "size": f["size"]} for f in files],
         "size_bytes": sum(int(f["size"]) for f in files), "weights_bytes": weights, "max_param_bytes": max_param,
         "kv": kv}
    if spec.get("required_features"):
        v["required_features"] = list(spec["required_features"])
    return v


def describe_spec(spec: dict, paths: dict[str, Path]) -> dict:
    """Facts of a model the kernel sends as files (``devices.model_spec``'s spec and paths): one variant per build
    the page may load, in the order the page's engine considers them."""
    if spec.get("prebuilt"):
        return describe_prebuilt(str(spec["id"]))
    if not spec.get("files"):
        return {}  # a URL: the page fetches it; nothing known here
    variants = []
    main_device = "cpu" if spec.get("device") == "cpu" else "webgpu"
    if spec.get("webgpu") is not False:
        variants.append(_variant(spec, paths, main_device))
    if spec.get("webgpu_fallback"):
        variants.append(_variant(spec["webgpu_fallback"], paths, "webgpu"))
    if spec.get("cpu"):
        variants.append(_variant(spec["cpu"], paths, "cpu"))
    return {"device": spec.get("device", "auto"), "variants": variants}
