"""TVM → browser compiler: Relax modules to tvmjs-loadable ``.wasm`` libraries (WebGPU or wasm CPU).

``build(mod)`` is the one call most code needs; ``link_executable`` serves callers that run
``tvm.compile`` themselves; ``ensure_runtime`` builds the TVM web runtime once per TVM version.
"""
from __future__ import annotations

from .build import Library, build, compile_module, link_executable, make_target, vm_functions, wgsl_sources

__all__ = [
    "Library", "build", "compile_module", "ensure_runtime", "link_executable", "make_target",
    "vm_functions", "wgsl_sources",
]


def __getattr__(name: str):
    # Imported on first use so that `python -m webllm_widget.compile.runtime` runs cleanly.
    if name == "ensure_runtime":
        from .runtime import ensure_runtime

        return ensure_runtime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
