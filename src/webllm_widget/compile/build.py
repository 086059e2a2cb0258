"""Compiles a Relax ``IRModule`` for WebGPU (or the wasm CPU) and links it into a tvmjs-loadable ``.wasm``.

Two entry points:

- :func:`build` — ``IRModule`` in, :class:`Library` out (compile, export, link, cache).
- :func:`link_executable` — for callers that ran ``tvm.compile`` themselves (the model
  compiler): a ``relax`` VM executable in, a ``.wasm`` file out.

Host code is exported as wasm *objects* (Debian's lld 14 cannot read the LLVM 22 bitcode that
TVM emits) and linked with emcc against the runtime objects from :mod:`.runtime`. Links take
tens of seconds, so linked libraries are cached by the content hash of everything that goes
into the link: the exported objects, the runtime build and the link flags.

Example::

    import tvm
    from tvm.script import relax as R, ir as I
    from webllm_widget.compile import build

    @I.ir_module
    class Linear:
        @R.function
        def main(x: R.Tensor((4, 8), "float32"), w: R.Tensor((8, 16), "float32")):
            with R.dataflow():
                y = R.matmul(x, w)
                R.output(y)
            return y

    lib = build(Linear)           # Library(wasm=b"\\0asm...", functions=["main"], wgsl={...})
    print(lib.wgsl["matmul_kernel"][:200])
    lib.save("linear.wasm")
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

from ..cache import atomic_write_bytes, cache_dir, sha256_bytes
from ..errors import CompileError


def _runtime():
    # Imported on use so `python -m webllm_widget.compile.runtime` does not find itself pre-imported.
    from . import runtime

    return runtime

TargetName = str  # "webgpu" | "cpu"
TARGETS = ("webgpu", "cpu")

#: emcc flags for a library that tvmjs instantiates with its WASI polyfill (the same set that
#: ``tvm.support.emcc.create_tvmjs_wasm`` uses, except the level). Part of the link cache key.
#: ``-O1`` at link time: the objects are already optimized (TVM's LLVM for the kernels and host code,
#: ``emcc -O3 -c`` for the runtime), and ``-O3`` only adds binaryen's wasm-opt pass over the whole
#: module, which took 259 s against 5 s for ``-O1`` on a busy 2-core machine for the same 3.6 MB
#: library (6.3 MB unoptimized). Link time is what CI and a user's first build wait for.
LINK_FLAGS = (
    "-O1", "--no-entry",
    "-s", "WASM_BIGINT=1",
    "-s", "ERROR_ON_UNDEFINED_SYMBOLS=0",  # TVMFFIWasm* imports come from the JS runtime
    "-s", "STANDALONE_WASM=1",
    "-s", "ALLOW_MEMORY_GROWTH=1",
    "-s", "TOTAL_MEMORY=160MB",
)
_LINK_RECIPE = "1"


def make_target(target: TargetName | Any = "webgpu"):
    """The ``tvm.target.Target`` for ``"webgpu"`` (WGSL kernels + wasm32 host) or ``"cpu"`` (wasm32 + SIMD128).

    A ``tvm.target.Target`` passes through unchanged.
    """
    import tvm

    if isinstance(target, tvm.target.Target):
        return target
    host = {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"}
    if target == "webgpu":
        return tvm.target.Target({"kind": "webgpu"}, host=host)
    if target == "cpu":
        cpu = dict(host, mattr=["+simd128"])
        return tvm.target.Target(cpu, host=cpu)
    raise CompileError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}",
                       code="compile-error")


def _target_name(target) -> str:
    if isinstance(target, str):
        return target
    return "webgpu" if target.kind.name == "webgpu" else "cpu"


@dataclasses.dataclass(frozen=True, repr=False)
class Library:
    """A linked model/kernel library that tvmjs (and web-llm) can load in the browser.

    ``wasm`` holds the bytes; ``sha256`` their hash (the content address used by the widgets);
    ``functions`` the Relax VM functions callable from JS; ``wgsl`` the WGSL source of each
    WebGPU kernel by name (empty for the CPU target).
    """

    wasm: bytes
    sha256: str
    functions: list[str]
    wgsl: dict[str, str]
    target: str
    name: str | None = None
    #: Parameters of each Relax function: ``{fn: [{"name", "dtype", "shape"}]}``; a shape holds ints and
    #: names of symbolic dims (``None`` when the rank is unknown). Lets callers check arguments first.
    signatures: dict = dataclasses.field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """Write the ``.wasm`` to ``path`` (atomically) and return the path."""
        path = Path(path)
        atomic_write_bytes(path, self.wasm)
        return path

    @property
    def kernels(self) -> list[str]:
        """Names of the WebGPU kernels (the keys of ``wgsl``)."""
        return list(self.wgsl)

    def __repr__(self) -> str:
        size = f"{len(self.wasm) / 1e6:.1f} MB" if len(self.wasm) >= 1e5 else f"{len(self.wasm) / 1e3:.0f} kB"
        return (f"Library({self.name or 'unnamed'!r}, target={self.target!r}, {size}, "
                f"sha256={self.sha256[:12]}…, functions={self.functions}, kernels={self.kernels})")

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            f"<details><summary><code>{html.escape(k)}</code></summary><pre>{html.escape(src)}</pre></details>"
            for k, src in self.wgsl.items())
        return (f"<div><b>Library</b> <code>{html.escape(str(self.name))}</code> · {self.target} · "
                f"{len(self.wasm):,} bytes · sha256 <code>{self.sha256[:12]}</code><br>"
                f"functions: <code>{html.escape(', '.join(self.functions))}</code>{rows}</div>")


# ---------------------------------------------------------------- inspecting an executable

_FUNC_LINE = re.compile(r"^@([^\s:]+):\s*$", re.M)
_WGSL_HEADER = re.compile(r"^// Function: (\S+)\n//-+\n", re.M)


def relax_signatures(mod) -> dict:
    """Tensor parameters of each Relax function in ``mod`` (TVM 0.27: ``param.ty`` is a ``TensorType``).

    Functions with a non-tensor parameter are left out (nothing to check them against).
    """
    from tvm import relax

    sigs: dict = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, relax.Function):
            continue
        params = []
        for p in func.params:
            ty = getattr(p, "ty", None)
            if ty is None or getattr(ty, "dtype", None) is None or not hasattr(ty, "ndim"):
                params = None
                break
            shape = getattr(ty, "shape", None)
            if shape is not None and hasattr(shape, "values"):
                dims = [int(d.value) if hasattr(d, "value") else str(d) for d in shape.values]
            elif ty.ndim >= 0:
                dims = [f"d{i}" for i in range(ty.ndim)]
            else:
                dims = None
            params.append({"name": str(getattr(p, "name", p)), "dtype": str(ty.dtype), "shape": dims})
        if params is not None:
            sigs[gv.name_hint] = params
    return sigs


def vm_functions(executable) -> list[str]:
    """Names of the Relax VM functions in ``executable`` (those callable through the VM)."""
    return _FUNC_LINE.findall(executable.as_text())


def _module_tree(mod):
    yield mod
    for sub in mod.imports:
        yield from _module_tree(sub)


def wgsl_sources(executable) -> dict[str, str]:
    """WGSL source of every WebGPU kernel in ``executable``, by kernel name."""
    out: dict[str, str] = {}
    for mod in _module_tree(executable.mod):
        if mod.kind != "webgpu":
            continue
        text = mod.inspect_source()
        heads = list(_WGSL_HEADER.finditer(text))
        for i, m in enumerate(heads):
            end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
            body = text[m.end():end].strip()
            if body:  # the source repeats each header once with nothing under it
                out[m.group(1)] = body + "\n"
    return out


# ---------------------------------------------------------------- linking


def _emcc_link(output: str, objects: list[str]) -> None:
    rt_objs = [str(p) for p in _runtime().runtime_objects(_runtime().ensure_runtime())]
    cmd = [_runtime().find_emcc(), *LINK_FLAGS, "-o", output, *rt_objs, *objects]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_runtime().emcc_env())
    if proc.returncode != 0:
        raise CompileError("emcc could not link the library:\n" + (proc.stdout + proc.stderr)[-4000:],
                           detail={"cmd": cmd})


def _export_objects(executable, workdir: Path) -> list[Path]:
    """Let ``export_library`` write the host and device objects without linking them."""
    collected: list[Path] = []

    def collect(output: str, objects: list[str], **_kwargs) -> None:
        for i, obj in enumerate(objects):
            dst = workdir / f"{i:02d}_{Path(obj).name}"
            shutil.copyfile(obj, dst)
            collected.append(dst)

    collect.object_format = "o"  # ask export_library for wasm objects, not LLVM bitcode
    with tempfile.TemporaryDirectory(dir=workdir) as ws:
        executable.export_library(str(workdir / "unused.wasm"), fcompile=collect, workspace_dir=ws)
    return collected


def link_key(objects: list[Path]) -> str:
    """Content hash of a link: the objects, the runtime build and the flags."""
    h = hashlib.sha256(f"link{_LINK_RECIPE}\0{_runtime().runtime_dir().name}\0{' '.join(LINK_FLAGS)}\0".encode())
    for obj in objects:
        data = obj.read_bytes()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def link_executable(executable, out_path: str | Path, *, target: TargetName | Any = "webgpu",
                    use_cache: bool = True, progress: bool = True) -> Path:
    """Link a Relax VM ``executable`` (from ``tvm.compile``) into ``out_path`` (a ``.wasm``).

    ``target`` names what the executable was compiled for; it only labels the result, since the
    executable carries its own code. The link is cached by content hash under
    ``cache_dir()/libs/``: linking the same code again copies the cached file (links take
    40–60 s). Raises :class:`CompileError` if exporting or linking fails.
    """
    from .keys import require_compiler

    require_compiler("linking a library")
    out_path = Path(out_path)
    _runtime().ensure_runtime(progress=progress)
    with tempfile.TemporaryDirectory(prefix="wlw-link-") as tmp:
        tmp = Path(tmp)
        try:
            objects = _export_objects(executable, tmp)
        except CompileError:
            raise
        except Exception as e:  # TVM raises its own error types
            raise CompileError(f"exporting the compiled module's objects failed: {e}") from e
        key = link_key(objects)
        cached = cache_dir() / "libs" / f"{key}.wasm"
        if not (use_cache and cached.is_file()):
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=1, desc=f"linking {_target_name(target)} library with emcc",
                           unit="link")
            try:
                wasm = tmp / "out.wasm"
                _emcc_link(str(wasm), [str(o) for o in objects])
                data = wasm.read_bytes()
            finally:
                if bar:
                    bar.update(1)
                    bar.close()
            if not data.startswith(b"\0asm"):
                raise CompileError(f"emcc wrote {wasm} but it is not a wasm module")
            atomic_write_bytes(cached, data)
        if out_path.resolve() != cached.resolve():
            atomic_write_bytes(out_path, cached.read_bytes())
    return out_path


# ---------------------------------------------------------------- the one-call API

Pipeline = Union[str, Callable, None]


def compile_module(mod, *, target: TargetName | Any = "webgpu", pipeline: Pipeline = "default",
                   tir_pipeline: Pipeline = "default"):
    """Run ``tvm.compile`` for ``target`` and return the Relax VM executable.

    Wraps TVM's errors in :class:`CompileError`. ``pipeline`` is the Relax pipeline (``"default"``
    applies TVM's target-specific passes, dlight GPU schedules included); pass ``None`` or your
    own pass for a module you already scheduled.
    """
    from .keys import require_compiler

    require_compiler("compiling a module")
    import tvm
    from tvm import relax

    if isinstance(mod, relax.Function):
        mod = tvm.IRModule({"main": mod})
    if not isinstance(mod, tvm.IRModule):
        raise CompileError(f"build() takes a tvm.IRModule with Relax functions, not {type(mod).__name__}")
    if not any(isinstance(f, relax.Function) for f in mod.functions.values()):
        raise CompileError(
            "the module has no Relax function, so there is nothing the browser's VM can call; "
            "add one (e.g. `@R.function def main(...)` that calls your PrimFunc with R.call_tir)")
    tgt = make_target(target)
    try:
        with tgt:
            ex = tvm.compile(mod, target=tgt, relax_pipeline=pipeline, tir_pipeline=tir_pipeline)
    except Exception as e:  # TVM's errors are many types; keep the useful head of the message
        msg = str(e).strip()
        if len(msg) > 3000:
            msg = msg[:1500] + "\n…\n" + msg[-1500:]
        raise CompileError(f"TVM could not compile the module for {_target_name(target)}: {msg}") from e
    if not hasattr(ex, "as_text"):
        raise CompileError("tvm.compile did not return a Relax VM executable")
    return ex


def build(mod, *, target: TargetName = "webgpu", name: str | None = None,
          pipeline: Pipeline = "default", tir_pipeline: Pipeline = "default",
          use_cache: bool = True, progress: bool = True) -> Library:
    """Compile ``mod`` (a Relax ``IRModule``) for ``target`` and link it into a :class:`Library`.

    ``target``: ``"webgpu"`` (kernels in WGSL, host code in wasm32) or ``"cpu"`` (everything in
    wasm32 with SIMD128, run with ``tvm.cpu()`` in tvmjs). ``pipeline``/``tir_pipeline`` go to
    ``tvm.compile``. The first call builds the TVM web runtime (~2 min, once per TVM version);
    each new module then takes one emcc link (seconds), cached by content hash.

    Raises :class:`CompileError` (bad module, TVM failure, link failure) or
    :class:`ToolchainMissing` (no emcc).
    """
    ex = compile_module(mod, target=target, pipeline=pipeline, tir_pipeline=tir_pipeline)
    tname = _target_name(target)
    with tempfile.TemporaryDirectory(prefix="wlw-build-") as tmp:
        out = link_executable(ex, Path(tmp) / "lib.wasm", target=tname, use_cache=use_cache,
                              progress=progress)
        wasm = out.read_bytes()
    return Library(wasm=wasm, sha256=sha256_bytes(wasm), functions=vm_functions(ex), signatures=relax_signatures(mod),
                   wgsl=wgsl_sources(ex), target=tname, name=name)
