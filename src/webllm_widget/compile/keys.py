"""Content keys of compiled model libraries, and whether the compiler (apache-tvm) is installed.

Chatting needs no compiler: the wheel carries the built-in model's libraries (``models/packaged.py``) and a
model folder then needs only its weights converted (numpy and ``gguf``). So the keys that name a compiled
library in the cache are computed here without importing TVM: they hash the model's config, the
quantization, the target and schedule, the ABI, the compiler's own sources and the TVM version. Where TVM is
not installed, the TVM version is the one the wheel's libraries were built with (their ``index.json``); the
other parts are this package's own files, so a key computed that way equals the key the wheel's builder
computed exactly when the library fits this package.

Compiling (a model of your own, or the ``WebGPU`` teaching widget) needs the ``compile`` extra:
``pip install 'webllm-widget[compile]'``; :func:`require_compiler` says so with :class:`CompilerNotInstalled`.

    from webllm_widget.compile import keys
    keys.model_library_key(cfg, quant, "webgpu", "auto")   # the cache entry's name
    keys.cached_library(cfg, quant, "cpu")                  # its path when the cache holds it, else None
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from ..cache import cache_dir, sources_digest
from ..errors import CompilerNotInstalled

__all__ = ["ABI_VERSION", "EXTRA", "compiler_available", "require_compiler", "tvm_version", "model_library_key",
           "cpu_library_key", "cached_library", "packaged_index", "PACKAGED_LIBS"]

#: Bump when the generated code changes in a way the content hash cannot see.
ABI_VERSION = "1"
#: Bump when the CPU kernels (compile/cpu.py) or their weight layout change.
CPU_KERNELS_VERSION = "13"
#: The CPU library's builds (compile/cpu.py ISAS), each with its own key.
CPU_ISAS = ("simd128", "relaxed-simd")
#: What a user installs to compile.
EXTRA = "webllm-widget[compile]"
_HERE = Path(__file__).parent
#: Where the wheel carries the built-in model's compiled libraries and their ``index.json`` (written at wheel
#: build time and used by ``models/packaged.py``; absent in a source checkout). Read here because the index
#: names the TVM version those libraries were built with, which the keys need where TVM is not installed.
PACKAGED_LIBS = _HERE.parent / "models" / "libs"
PACKAGED_INDEX = "index.json"


def packaged_index(libs_dir: Path | None = None) -> dict | None:
    """The wheel's ``index.json`` (which libraries it carries, under which keys), or None without one."""
    try:
        return json.loads(((libs_dir or PACKAGED_LIBS) / PACKAGED_INDEX).read_text())
    except (OSError, ValueError):
        return None


def compiler_available() -> bool:
    """Whether apache-tvm is installed (without importing it)."""
    return importlib.util.find_spec("tvm") is not None


def require_compiler(what: str) -> None:
    """Raise :class:`CompilerNotInstalled` naming the extra when apache-tvm is not installed."""
    if not compiler_available():
        raise CompilerNotInstalled(
            f"{what} needs the compiler, which is not installed: pip install '{EXTRA}' (it brings apache-tvm; "
            "linking also needs emscripten, e.g. apt-get install emscripten). Chatting with the built-in model "
            "or an MLC prebuilt id works without it.", detail={"extra": "compile"})


def tvm_version() -> str:
    """The installed TVM's version; without TVM, the version the wheel's packaged libraries were built with."""
    if compiler_available():
        import tvm

        return str(tvm.__version__)
    index = packaged_index()
    if index and index.get("tvm"):
        return str(index["tvm"])
    require_compiler("building this model")
    raise AssertionError("unreachable")


def _model_lib_sources() -> str:
    """Hash of the model compiler's own sources, so editing them never reuses a stale library."""
    return sources_digest(_HERE, ("arch", "quant/modes.py", "quant/nn.py", "model_lib.py", "schedules.py",
                                  "attention.py"))


def model_library_key(config: Any, quantization: Any, target: str, schedule: str, *, tvm: str | None = None) -> str:
    """Cache key of a WebGPU model library: everything that goes into the compiled code."""
    from .quant.modes import as_quantization

    blob = json.dumps({"config": config.to_dict(), "quant": as_quantization(quantization).key(),
                       "target": str(target), "schedule": schedule, "abi": ABI_VERSION,
                       "tvm": tvm or tvm_version(), "sources": _model_lib_sources()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cpu_library_key(config: Any, quantization: Any, *, isa: str = "simd128", tvm: str | None = None) -> str:
    """Content key of a CPU model library: model shape, quantization, instruction set (``simd128`` or
    ``relaxed-simd``), kernels, ABI, TVM version, the model compiler's sources (the model and its attention
    kernels are compiled for the CPU too) and the CPU kernels' own (``cpu.py``, ``cpu_attention.py``)."""
    from .quant.modes import as_quantization

    if isa not in CPU_ISAS:
        raise ValueError(f"CPU instruction set {isa!r} is not one of {', '.join(CPU_ISAS)}")
    blob = json.dumps({"config": config.to_dict(), "quant": as_quantization(quantization).key(),
                       "target": f"wasm32-{isa}", "kernels": CPU_KERNELS_VERSION, "abi": ABI_VERSION,
                       "tvm": tvm or tvm_version(), "sources": _model_lib_sources(),
                       "cpu_sources": sources_digest(_HERE, ("cpu.py", "cpu_attention.py"))}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def webgpu_cache_entry(key: str) -> Path:
    """Folder of a WebGPU library in the cache (``model.wasm`` + ``info.json``)."""
    return cache_dir() / "model-libs" / key


def cpu_cache_entry(key: str) -> Path:
    """File of a CPU library in the cache."""
    return cache_dir() / "model-libs-cpu" / f"{key}.wasm"


def cached_library(config: Any, quantization: Any, device: str, schedule: str = "auto",
                   isa: str = "simd128") -> Path | None:
    """The cached ``.wasm`` of this model's library for ``device`` (``"webgpu"``/``"cpu"``; on the CPU, of the
    ``isa`` build), or None."""
    if device == "cpu":
        p = cpu_cache_entry(cpu_library_key(config, quantization, isa=isa))
        return p if p.is_file() else None
    entry = webgpu_cache_entry(model_library_key(config, quantization, device, schedule))
    return entry / "model.wasm" if (entry / "model.wasm").is_file() and (entry / "info.json").is_file() else None
