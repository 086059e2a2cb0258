"""The built-in model's compiled libraries shipped inside the wheel, so a pip user needs no emscripten.

At wheel build time (``hatch_build.py``) :func:`build_packaged_libraries` compiles the built-in model's
WebGPU libraries (the default ``"auto"`` schedule, and ``"fallback"``, which the page picks on software
adapters such as SwiftShader) and its two CPU libraries (SIMD128 and relaxed SIMD) and writes them, with ``index.json``, to
``webllm_widget/models/libs/`` inside the wheel. At run time :func:`seed_cache` copies a packaged library
into the compiler's cache when its content key matches the one the installed compiler computes (TVM
version, model config, quantization, compiler sources, ABI), so the model folder build finds it there
and only converts the weights. A mismatch (another TVM, edited sources) falls back to compiling.

    from webllm_widget.models import packaged
    packaged.seed_cache(gguf_path)       # {"webgpu": True, "webgpu-fallback": True, "cpu": True} from the wheel
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from .. import cache
from ..compile.keys import PACKAGED_INDEX, PACKAGED_LIBS, packaged_index
from .builtin import BUILTIN_NAME, DEFAULT_GGUF_MEMBER, DEFAULT_WHEEL, default_gguf

__all__ = ["LIBS_DIR", "INDEX", "WEBGPU_SCHEDULE", "FALLBACK_SCHEDULE", "library_keys", "packaged_index", "seed_cache",
           "build_packaged_libraries"]

#: Where the wheel carries the libraries (absent in a source checkout or an editable install).
LIBS_DIR = PACKAGED_LIBS
INDEX = PACKAGED_INDEX
#: The schedule of the packaged WebGPU library: the default one (``models.default()``'s).
WEBGPU_SCHEDULE = "auto"
#: The schedule of the second packaged WebGPU library (kernels for software adapters; same weights).
FALLBACK_SCHEDULE = "fallback"


def _plan(gguf: str | os.PathLike) -> tuple[Any, Any, Any]:
    """The model's config and its ``ggml`` modes for WebGPU and for the CPU path (which may store blocks
    differently), from one read of the file."""
    from ..compile.arch import registry
    from ..compile.checkpoint import open_checkpoint
    from ..compile.quant.ggml import ggml_quantization

    ckpt = open_checkpoint(gguf)
    cfg = registry.config_from_dict(ckpt.config)
    return cfg, ggml_quantization(ckpt, cfg), ggml_quantization(ckpt, cfg, device="cpu")


def _keys(cfg: Any, quant: Any, cpu_quant: Any) -> dict[str, str]:
    from ..compile.keys import cpu_library_key, model_library_key

    return {"webgpu": model_library_key(cfg, quant, "webgpu", WEBGPU_SCHEDULE),
            "webgpu-fallback": model_library_key(cfg, quant, "webgpu", FALLBACK_SCHEDULE),
            "cpu": cpu_library_key(cfg, cpu_quant),
            "cpu-relaxed-simd": cpu_library_key(cfg, cpu_quant, isa="relaxed-simd")}


def library_keys(gguf: str | os.PathLike) -> dict[str, str]:
    """Content keys of the built-in model's libraries as the installed compiler computes them.

    ``{"webgpu": ..., "webgpu-fallback": ..., "cpu": ..., "cpu-relaxed-simd": ...}``; the same keys name the
    compiler's cache entries.
    """
    return _keys(*_plan(gguf))


def _webgpu_cache_entry(key: str) -> Path:
    from ..compile.keys import webgpu_cache_entry

    return webgpu_cache_entry(key)  # model_lib.build_model_library's cache layout


def _cpu_cache_entry(key: str) -> Path:
    from ..compile.keys import cpu_cache_entry

    return cpu_cache_entry(key)  # cpu.build_cpu_library's cache layout


def seed_cache(gguf: str | os.PathLike,
               devices: tuple[str, ...] = ("webgpu", "webgpu-fallback", "cpu", "cpu-relaxed-simd"),
               libs_dir: Path | None = None) -> dict[str, bool]:
    """Copy the wheel's libraries whose key matches the installed compiler's into its cache.

    Returns, per device, whether the cache now holds the packaged library (False: no wheel copy, or its
    key differs, e.g. another TVM version; the build then compiles as usual). Files are checked
    against the sha256 in ``index.json`` before use.
    """
    libs_dir = libs_dir or LIBS_DIR
    index = packaged_index(libs_dir)
    if not index:
        return {d: False for d in devices}
    keys = library_keys(gguf)
    used: dict[str, bool] = {}
    for device in devices:
        entry = index.get("libraries", {}).get(device)
        if not entry or entry.get("key") != keys.get(device):
            used[device] = False
            continue
        src = libs_dir / entry["file"]
        if not src.is_file() or cache.sha256_file(src) != entry["sha256"]:
            used[device] = False
            continue
        if device.startswith("webgpu"):
            dest = _webgpu_cache_entry(entry["key"])
            if not ((dest / "model.wasm").is_file() and (dest / "info.json").is_file()):
                with cache.atomic_dir(dest) as tmp:
                    shutil.copyfile(src, tmp / "model.wasm")
                    (tmp / "info.json").write_text(json.dumps(entry["info"]))
        else:
            dest = _cpu_cache_entry(entry["key"])
            if not dest.is_file():
                cache.atomic_write_bytes(dest, src.read_bytes())
        used[device] = True
    return used


def build_packaged_libraries(out: str | os.PathLike, gguf: str | os.PathLike | None = None, *,
                             progress: bool = True) -> dict:
    """Compile (or take from the cache) the built-in model's two WebGPU libraries and its CPU library and write them to
    ``out`` with ``index.json``; return the index. Needs TVM and emscripten (the wheel builder's machine)."""
    import tvm

    from ..compile.cpu import build_cpu_library
    from ..compile.model_lib import build_model_library

    out = Path(out)
    source = default_gguf(gguf, progress=progress)
    cfg, quant, cpu_quant = _plan(source)
    keys = _keys(cfg, quant, cpu_quant)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*"):
        if stale.is_file():
            stale.unlink()

    build_model_library(cfg, quant, "webgpu", schedule=WEBGPU_SCHEDULE, progress=progress)
    entry = _webgpu_cache_entry(keys["webgpu"])
    webgpu_file = f"webgpu-{keys['webgpu']}.wasm"
    shutil.copyfile(entry / "model.wasm", out / webgpu_file)
    info = json.loads((entry / "info.json").read_text())

    build_model_library(cfg, quant, "webgpu", schedule=FALLBACK_SCHEDULE, progress=progress)
    fb_entry = _webgpu_cache_entry(keys["webgpu-fallback"])
    fb_file = f"webgpu-fallback-{keys['webgpu-fallback']}.wasm"
    shutil.copyfile(fb_entry / "model.wasm", out / fb_file)
    fb_info = json.loads((fb_entry / "info.json").read_text())

    cpu_path = build_cpu_library(cfg, cpu_quant, progress=progress)
    cpu_file = f"cpu-{keys['cpu']}.wasm"
    shutil.copyfile(cpu_path, out / cpu_file)
    relaxed_path = build_cpu_library(cfg, cpu_quant, isa="relaxed-simd", progress=progress)
    relaxed_file = f"cpu-relaxed-simd-{keys['cpu-relaxed-simd']}.wasm"
    shutil.copyfile(relaxed_path, out / relaxed_file)

    index = {
        "model": BUILTIN_NAME, "source": DEFAULT_WHEEL, "member": DEFAULT_GGUF_MEMBER,
        "tvm": tvm.__version__, "quantization": quant.name,
        "libraries": {
            "webgpu": {"key": keys["webgpu"], "file": webgpu_file, "schedule": WEBGPU_SCHEDULE,
                       "sha256": cache.sha256_file(out / webgpu_file), "info": info},
            "webgpu-fallback": {"key": keys["webgpu-fallback"], "file": fb_file, "schedule": FALLBACK_SCHEDULE,
                                "sha256": cache.sha256_file(out / fb_file), "info": fb_info},
            "cpu": {"key": keys["cpu"], "file": cpu_file, "sha256": cache.sha256_file(out / cpu_file)},
            "cpu-relaxed-simd": {"key": keys["cpu-relaxed-simd"], "file": relaxed_file,
                                 "sha256": cache.sha256_file(out / relaxed_file)},
        },
    }
    (out / INDEX).write_text(json.dumps(index, indent=1))
    return index
