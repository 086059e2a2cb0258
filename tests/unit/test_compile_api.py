"""The compile API turns Relax modules into tvmjs-loadable wasm libraries with their WGSL and function list."""
from __future__ import annotations

import pytest
import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from webllm_widget.cache import cache_dir, sha256_bytes
from webllm_widget.compile import Library, build, compile_module, link_executable
from webllm_widget.compile.build import _export_objects, link_key, vm_functions, wgsl_sources
from webllm_widget.errors import CompileError


@I.ir_module
class MatmulBias:
    @R.function
    def main(x: R.Tensor((4, 8), "float32"), w: R.Tensor((8, 16), "float32"), b: R.Tensor((16,), "float32")):
        with R.dataflow():
            y = R.matmul(x, w)
            z = R.add(y, b)
            R.output(z)
        return z


@I.ir_module
class RowSum:
    @R.function
    def row_sum(x: R.Tensor((32, 64), "float32")):
        with R.dataflow():
            s = R.sum(x, axis=1)
            R.output(s)
        return s

    @R.function
    def total(x: R.Tensor((32, 64), "float32")):
        with R.dataflow():
            s = R.sum(x)
            R.output(s)
        return s


@I.ir_module
class Float64Add:  # WebGPU has no f64: TVM's WGSL codegen refuses it
    @R.function
    def main(x: R.Tensor((4,), "float64"), y: R.Tensor((4,), "float64")):
        with R.dataflow():
            z = R.add(x, y)
            R.output(z)
        return z


@pytest.fixture(scope="module")
def matmul_lib() -> Library:
    return build(MatmulBias, name="matmul_bias", progress=False)


@pytest.fixture(scope="module")
def rowsum_lib() -> Library:
    return build(RowSum, name="row_sum", progress=False)


def test_matmul_bias_library_is_a_wasm_module_with_its_hash(matmul_lib):
    assert matmul_lib.wasm[:4] == b"\0asm"
    assert matmul_lib.sha256 == sha256_bytes(matmul_lib.wasm)
    assert matmul_lib.target == "webgpu" and matmul_lib.name == "matmul_bias"
    # The runtime is linked in: the library stands alone in the browser.
    assert len(matmul_lib.wasm) > 1_000_000


def test_matmul_bias_lists_its_vm_function_and_fused_kernel_wgsl(matmul_lib):
    assert matmul_lib.functions == ["main"]
    assert matmul_lib.wgsl, "no WGSL kernels found"
    for name, src in matmul_lib.wgsl.items():
        assert "@compute" in src, name
        assert f"fn {name}(" in src, name
    assert any("matmul" in k for k in matmul_lib.wgsl)


def test_reduction_module_lists_every_relax_function(rowsum_lib):
    assert sorted(rowsum_lib.functions) == ["row_sum", "total"]
    assert len(rowsum_lib.wgsl) >= 2
    assert all("@compute" in s for s in rowsum_lib.wgsl.values())
    assert any("sum" in k for k in rowsum_lib.wgsl)


def test_building_the_same_module_again_gives_the_same_hash_from_the_cache(tmp_path, matmul_lib):
    # The link cache is keyed by the exported objects: find this module's entry.
    objects = _export_objects(compile_module(MatmulBias, target="webgpu"), tmp_path)
    entry = cache_dir() / "libs" / f"{link_key(objects)}.wasm"
    assert entry.read_bytes() == matmul_lib.wasm
    stamp = entry.stat().st_mtime_ns
    again = build(MatmulBias, name="matmul_bias", progress=False)
    assert again.sha256 == matmul_lib.sha256
    assert again.wgsl == matmul_lib.wgsl
    assert entry.stat().st_mtime_ns == stamp, "the same module was linked again"


def test_different_modules_get_different_hashes(matmul_lib, rowsum_lib):
    assert matmul_lib.sha256 != rowsum_lib.sha256


@pytest.mark.slow
def test_relinking_without_the_cache_gives_identical_bytes(matmul_lib):
    # The link cache is keyed by the exported objects; this checks that a link is deterministic.
    fresh = build(MatmulBias, name="matmul_bias", use_cache=False, progress=False)
    assert fresh.sha256 == matmul_lib.sha256


def test_cpu_target_builds_a_library_without_wgsl():
    lib = build(MatmulBias, target="cpu", name="matmul_bias_cpu", progress=False)
    assert lib.wasm[:4] == b"\0asm"
    assert lib.target == "cpu"
    assert lib.functions == ["main"]
    assert lib.wgsl == {}


def test_link_executable_links_an_executable_compiled_by_the_caller(tmp_path, matmul_lib):
    ex = compile_module(MatmulBias, target="webgpu")
    assert vm_functions(ex) == ["main"] and wgsl_sources(ex) == matmul_lib.wgsl
    out = link_executable(ex, tmp_path / "lib" / "m.wasm", progress=False)
    assert out.read_bytes() == matmul_lib.wasm


def test_library_saves_and_describes_itself(tmp_path, matmul_lib):
    path = matmul_lib.save(tmp_path / "m.wasm")
    assert path.read_bytes() == matmul_lib.wasm
    text = repr(matmul_lib)
    assert "matmul_bias" in text and matmul_lib.sha256[:12] in text and "main" in text
    assert "<code>main</code>" in matmul_lib._repr_html_()


def test_float64_module_raises_compile_error_naming_the_reason():
    with pytest.raises(CompileError) as err:
        build(Float64Add, progress=False)
    assert err.value.code == "compile-error"
    assert "f16 or f32" in str(err.value)


def test_module_without_relax_functions_raises_compile_error():
    from tvm.script import tirx as T

    @T.prim_func
    def add_one(a: T.Buffer((4,), "float32"), b: T.Buffer((4,), "float32")):
        for i in range(4):
            b[i] = a[i] + T.float32(1)

    with pytest.raises(CompileError, match="no Relax function"):
        build(tvm.IRModule({"add_one": add_one}), progress=False)


def test_unknown_target_raises_compile_error():
    with pytest.raises(CompileError, match="unknown target"):
        build(MatmulBias, target="cuda", progress=False)


def test_not_a_module_raises_compile_error():
    with pytest.raises(CompileError, match="IRModule"):
        build("not a module", progress=False)
