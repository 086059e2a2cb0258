"""The scheduled TIR behind each WGSL kernel of a model folder built by webllm-widget, and its FLOPs.

The model library keeps only the generated code, so the TIR is made again: the folder's manifest names the
config, quantization and schedule it was built with, and the same export and scheduling passes as the build
(:func:`webllm_widget.compile.schedules.scheduling_passes`) give the same kernels. Cached by the library's content
key (tens of seconds the first time).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..cache import atomic_write_bytes, cache_dir
from ..errors import BadModel


@dataclass(frozen=True)
class KernelSource:
    """One scheduled TIR function of a model library (its WGSL entry point is ``<name>_kernel``)."""

    name: str
    tir: str
    #: Floating-point operations of one launch (TVM's ``estimate_tir_flops``); None where shapes are symbolic.
    flops: float | None


def function_of(kernel: str) -> str:
    """The TIR function a WGSL entry point came from: ``dequant_matmul_q4_16_kernel`` -> ``dequant_matmul_q4_16``."""
    return re.sub(r"_kernel(_\d+)?$", "", kernel)


def _build_info(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        cfg = json.loads((folder / "mlc-chat-config.json").read_text())
    except (OSError, ValueError) as e:
        raise BadModel(f"{folder}: kernel sources need a folder built by webllm-widget (manifest.json and "
                       f"mlc-chat-config.json): {e}") from e
    build = manifest.get("build") or {}
    if not build.get("library") or manifest.get("device", "webgpu") != "webgpu":
        raise BadModel(f"{folder}: not a WebGPU model library built by webllm-widget; its TIR cannot be made again")
    return {"config": cfg["model_config"], "model_type": cfg.get("model_type") or cfg["model_config"].get("model_type", "?"),
            "quantization": build["quantization"],
            "schedule": manifest.get("schedule") or build.get("schedule") or "auto",
            "library_key": (build.get("compiler") or {}).get("library")}


def kernel_sources(folder: str | Path) -> dict[str, KernelSource]:
    """Every TIR function of ``folder``'s WebGPU library after scheduling, by name."""
    folder = Path(folder)
    info = _build_info(folder)
    key = info["library_key"]
    cached = cache_dir() / "kernel-sources" / f"{key}.json" if key else None
    if cached is not None and cached.is_file():
        data = json.loads(cached.read_text())
    else:
        data = _make(info)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cached, json.dumps(data).encode())
    return {n: KernelSource(n, d["tir"], d["flops"]) for n, d in data.items()}


def _make(info: dict) -> dict:
    import tvm
    from tvm import tirx
    from tvm.s_tir.analysis import estimate_tir_flops

    from ..compile.model_lib import export_model, webgpu_target
    from ..compile.quant.modes import Quantization
    from ..compile.schedules import _rules, scheduling_passes, use_fallback_attention

    target = webgpu_target()
    schedule = info["schedule"]
    exported = export_model(info["config"], Quantization.from_key(info["quantization"]), target, schedule)
    mod = exported.mod
    kv = exported.metadata["kv_cache"]  # the decode attention the library runs (compile/model_lib._for_schedule)
    mod = use_fallback_attention(mod, kv["num_key_value_heads"], kv["num_attention_heads"], kv["head_dim"],
                                 Quantization.from_key(info["quantization"]).compute_dtype, gpu=schedule != "fallback")
    with target:
        mod = tvm.transform.Sequential(scheduling_passes(target, _rules(schedule)))(mod)
    out = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        flops = None
        script = func.script()
        # Symbolic extents (the KV cache's pages, a prompt's length: `T.Buffer(("B", 9, 64), ...)`, `n = T.int64()`)
        # have no count; TVM would guess a huge one.
        if not (re.search(r'T\.Buffer\(\([^)]*"\w+"', script) or re.search(r"= T\.int(32|64)\(\)", script)):
            try:
                flops = float(estimate_tir_flops(tvm.IRModule({"main": func})))
            except Exception:  # noqa: BLE001 - a function TVM cannot count
                flops = None
            # loops bounded only at run time (the sampling kernels' scans) are counted as 2^31 iterations or more
            if flops is not None and flops >= 2.0**40:
                flops = None
        out[gv.name_hint] = {"tir": script, "flops": flops if flops and flops > 0 else None}
    return out
