"""The built wheel carries the engine bundle and the built-in model's compiled libraries, and needs apache-tvm
only for its ``compile`` extra. Installing it into a venv without TVM and chatting there:
tests/browser/test_light_install.py (same wheel, the ``project_wheel`` fixture)."""
from __future__ import annotations

import hashlib
import json
import zipfile

import pytest

pytestmark = pytest.mark.slow  # builds the wheel (cached by content hash)


def test_wheel_carries_the_engine_bundle_and_both_libraries_of_the_built_in_model(project_wheel):
    with zipfile.ZipFile(project_wheel) as z:
        names = set(z.namelist())
        index = json.loads(z.read("webllm_widget/models/libs/index.json"))
        for entry in index["libraries"].values():
            data = z.read(f"webllm_widget/models/libs/{entry['file']}")
            assert data[:4] == b"\0asm" and hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert {"webllm_widget/static/engine_worker.js", "webllm_widget/static/chat_widget.js",
            "webllm_widget/static/runner.js"} <= names
    assert set(index["libraries"]) == {"webgpu", "webgpu-fallback", "cpu", "cpu-relaxed-simd"}
    assert index["libraries"]["webgpu-fallback"]["schedule"] == "fallback"
    assert index["model"] == "SmolLM2-135M-Instruct" and index["libraries"]["webgpu"]["schedule"] == "auto"
    assert "prefill" in index["libraries"]["webgpu"]["info"]["functions"]


def test_apache_tvm_is_required_only_by_the_compile_extra(project_wheel):
    with zipfile.ZipFile(project_wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    tvm_reqs = [r for r in requires if r.replace("_", "-").startswith("apache-tvm")]
    assert tvm_reqs and all("extra ==" in r for r in tvm_reqs), tvm_reqs
    assert any(r.endswith(("extra == 'compile'", 'extra == "compile"')) for r in tvm_reqs), tvm_reqs
    assert "Provides-Extra: compile" in meta
