"""TVM → browser compiler: Relax modules to tvmjs-loadable ``.wasm`` libraries (WebGPU or wasm CPU).

``build(mod)`` is the one call most code needs; ``link_executable`` serves callers that run
``tvm.compile`` themselves; ``ensure_runtime`` builds the TVM web runtime once per TVM version.
"""
from __future__ import annotations

from .build import Library, build, compile_module, link_executable, make_target, vm_functions, wgsl_sources
from .runtime import ensure_runtime

__all__ = [
    "Library", "build", "compile_module", "ensure_runtime", "link_executable", "make_target",
    "vm_functions", "wgsl_sources",
]
