"""TVM → browser compiler: Relax modules to tvmjs-loadable ``.wasm`` libraries (WebGPU or wasm CPU).

``build(mod)`` is the one call most code needs; ``link_executable`` serves callers that run
``tvm.compile`` themselves; ``ensure_runtime`` builds the TVM web runtime once per TVM version.
Names are imported on first use, so ``python -m webllm_widget.compile.runtime`` and the
submodules of other helpers do not pull in each other.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "Library": "build", "build": "build", "compile_module": "build", "link_executable": "build",
    "make_target": "build", "vm_functions": "build", "wgsl_sources": "build",
    "ensure_runtime": "runtime",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .build import Library, build, compile_module, link_executable, make_target, vm_functions, wgsl_sources
    from .runtime import ensure_runtime


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
