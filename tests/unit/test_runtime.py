"""The TVM web runtime builds once per TVM version and is reused from the cache afterwards."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from webllm_widget.compile import runtime
from webllm_widget.errors import ToolchainMissing


@pytest.fixture(scope="module")
def runtime_root():
    # Builds on first use (~2-3 min on 2 cores); a warm cache makes this instant.
    return runtime.ensure_runtime(progress=False)


def test_ensure_runtime_leaves_three_wasm_objects_and_their_bitcode(runtime_root):
    for part in runtime.RUNTIME_PARTS:
        obj = runtime_root / f"{part}.o"
        bc = runtime_root / f"{part}.bc"
        assert obj.is_file() and obj.stat().st_size > 10_000, obj
        assert obj.read_bytes()[:4] == b"\0asm", f"{obj} is not a wasm object"
        assert bc.read_bytes()[:2] == b"BC", f"{bc} is not LLVM bitcode"
    assert not any(p.name.startswith(".") for p in runtime_root.parent.iterdir() if p.is_dir()), \
        "a half-built runtime dir was left in the cache"


def test_runtime_is_cached_by_tvm_version_and_header_hash(runtime_root):
    import tvm

    assert runtime_root.name == f"tvm-{tvm.__version__}-{runtime.headers_hash()}"
    assert runtime_root == runtime.runtime_dir()


def test_second_ensure_runtime_does_not_rebuild(runtime_root):
    before = {p.name: p.stat().st_mtime_ns for p in runtime_root.iterdir()}
    again = runtime.ensure_runtime(progress=False)
    assert again == runtime_root
    assert {p.name: p.stat().st_mtime_ns for p in again.iterdir()} == before


def test_runtime_exports_the_tvm_ffi_entry_points(runtime_root):
    # tvmjs calls these by name; if our headers broke a translation unit they would be absent.
    nm = shutil.which("llvm-nm-14") or shutil.which("llvm-nm")
    if nm is None:
        pytest.skip("llvm-nm not installed (comes with emscripten's clang on Debian)")
    out = subprocess.run([nm, "--defined-only", str(runtime_root / "wasm_runtime.o")],
                         capture_output=True, text=True, check=True).stdout
    for sym in ("TVMFFIFunctionCall", "TVMFFIObjectDecRef", "TVMFFIEnvSetStream"):
        assert sym in out, sym


def test_missing_emcc_is_reported_with_the_apt_fix(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolchainMissing) as err:
        runtime.find_emcc()
    assert "apt-get install -y emscripten" in str(err.value)
    assert err.value.code == "toolchain-missing"


def test_our_headers_assemble_into_the_tree_the_makefile_expects(tmp_path):
    web = runtime.assemble_tree(tmp_path / "tvm")
    root = web.parent
    assert (web / "Makefile").is_file() and (web / "emcc" / "wasm_runtime.cc").is_file()
    for rel in ("src/support/bytes_io.h", "include/tvm/support/io.h", "include/tvm/support/serializer.h",
                "3rdparty/compiler-rt/builtin_fp16.h", "3rdparty/tvm-ffi/include/tvm/ffi/function.h",
                "3rdparty/tvm-ffi/3rdparty/dlpack/include/dlpack/dlpack.h", "src/runtime/vm/vm.cc"):
        assert (root / rel).is_file(), rel


_FP16_PROBE = r"""
#include <cstdio>
#include <cstdint>
#include <cstring>
#include "builtin_fp16.h"
int main() {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = __extendXfYf2__<uint16_t, uint16_t, 10, float, uint32_t, 23>(uint16_t(h));
    uint32_t b; std::memcpy(&b, &f, 4); std::printf("%08x\n", b);
  }
  uint32_t b;
  while (std::scanf("%x", &b) == 1) {
    float f; std::memcpy(&f, &b, 4);
    std::printf("%04x\n", unsigned(__truncXfYf2__<float, uint32_t, 23, uint16_t, uint16_t, 10>(f)));
  }
}
"""


def test_our_half_float_conversions_match_numpy_bit_for_bit(tmp_path):
    # Our builtin_fp16.h replaces compiler-rt's; the sort kernels compare fp16 values through it.
    import numpy as np

    cxx = shutil.which("clang++-14") or shutil.which("clang++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no native C++ compiler")
    (tmp_path / "probe.cc").write_text(_FP16_PROBE)
    include = runtime.Path(runtime.__file__).with_name("include") / "compiler-rt"
    subprocess.run([cxx, "-std=c++17", "-O1", f"-I{include}", "probe.cc", "-o", "probe"],
                   cwd=tmp_path, check=True)
    rng = np.random.default_rng(0)
    floats = np.concatenate([
        rng.uniform(-70000, 70000, 20000), rng.uniform(-1e-4, 1e-4, 20000),  # normals, subnormals
        rng.standard_normal(20000), [0.0, -0.0, np.inf, -np.inf, 65504.0, 65520.0, 2.0 ** -25, 2.0 ** -24],
        np.arange(-2048, 2048) + 0.5,  # ties, rounded to even
    ]).astype(np.float32)
    stdin = "\n".join(f"{b:08x}" for b in floats.view(np.uint32))
    out = subprocess.run([str(tmp_path / "probe")], input=stdin, capture_output=True, text=True,
                         check=True).stdout.split()
    widened = np.array([int(x, 16) for x in out[:65536]], dtype=np.uint32).view(np.float32)
    expect = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
    nan = np.isnan(expect)
    assert np.isnan(widened[nan]).all()
    assert (widened.view(np.uint32)[~nan] == expect.view(np.uint32)[~nan]).all()
    narrowed = np.array([int(x, 16) for x in out[65536:]], dtype=np.uint16)
    with np.errstate(over="ignore"):
        expect16 = floats.astype(np.float16).view(np.uint16)
    mismatch = np.nonzero(narrowed != expect16)[0]
    assert mismatch.size == 0, [(floats[i], hex(narrowed[i]), hex(expect16[i])) for i in mismatch[:5]]


def test_isolated_cache_reuses_the_built_user_runtime(runtime_root, tmp_path, monkeypatch):
    default = runtime._default_cache_root()
    if default is None or not runtime_root.is_relative_to(default):
        pytest.skip("the runtime under test is not in the user cache (WEBLLM_WIDGET_CACHE is set)")
    monkeypatch.setenv("WEBLLM_WIDGET_CACHE", str(tmp_path / "isolated"))
    assert runtime.runtime_dir() == runtime_root
    assert runtime.ensure_runtime(progress=False) == runtime_root
    assert not (tmp_path / "isolated" / "runtime").exists()


# ---------------------------------------------------------------- `webllm-widget doctor`

def _doctor(env=None):
    import os
    import sys

    return subprocess.run([sys.executable, "-m", "webllm_widget.cli", "doctor"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_doctor_reports_the_toolchain_and_the_built_runtime(runtime_root):
    out = _doctor()
    assert "tvm 0.27.0.post1" in out.stdout
    assert "emcc" in out.stdout and "3.1" in out.stdout
    assert re.search(rf"^\[ok  \] TVM web runtime +{re.escape(str(runtime_root))}$", out.stdout, re.M), out.stdout
    missing = [line for line in out.stdout.splitlines() if line.startswith("[MISS]")]
    assert out.returncode == (1 if missing else 0), out.stdout + out.stderr


def test_doctor_fails_without_emcc_and_says_how_to_install_it():
    import sys
    from pathlib import Path

    out = _doctor({"PATH": str(Path(sys.executable).parent)})
    assert out.returncode == 1
    assert "[MISS] emcc" in out.stdout
    assert "fix: apt-get install -y emscripten" in out.stdout
    assert "emcc" in out.stderr
