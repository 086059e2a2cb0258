"""Builds the TVM web runtime (wasm objects that every model library links against) once per TVM version.

The ``apache-tvm`` wheel ships the web runtime's sources (``tvm/web/emcc/*.cc``) but not a
few headers they include. We assemble the source tree that ``tvm/web/Makefile`` expects from
the installed ``tvm`` and ``tvm_ffi`` packages, add our own small headers from
``compile/include/``, build the three LLVM bitcode files with Debian's emscripten, and compile
each once more to a wasm object so that later links are fast (lld 14 cannot read the LLVM 22
bitcode TVM emits, but it links objects fine).

Example::

    from webllm_widget.compile.runtime import ensure_runtime
    rt = ensure_runtime()          # ~3 min of CPU the first time, instant afterwards
    print(sorted(p.name for p in rt.glob("*.o")))
"""
from __future__ import annotations

import concurrent.futures
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..cache import atomic_dir, cache_dir
from ..errors import CompileError, ToolchainMissing

#: The runtime parts, in link order.
RUNTIME_PARTS = ("wasm_runtime", "tvmjs_support", "webgpu_runtime")

_INCLUDE = Path(__file__).with_name("include")
# Bump when the way the runtime is built changes, so old caches are not reused.
_RECIPE = "2"


def emcc_env() -> dict[str, str]:
    """Environment for Debian's emscripten: its node tools need Debian's node modules."""
    env = dict(os.environ)
    env.pop("EM_CACHE", None)  # Debian's cache is frozen; a different one would need a rebuild
    if Path("/usr/share/nodejs").is_dir():
        paths = [p for p in env.get("NODE_PATH", "").split(os.pathsep) if p]
        if "/usr/share/nodejs" not in paths:
            paths.append("/usr/share/nodejs")
        env["NODE_PATH"] = os.pathsep.join(paths)
    return env


def find_emcc() -> str:
    """Path of ``emcc``, or raise :class:`ToolchainMissing` saying how to install it."""
    emcc = shutil.which("emcc")
    if not emcc:
        raise ToolchainMissing(
            "emcc (emscripten) is not on PATH; it links TVM's wasm. Install it with "
            "`apt-get install -y emscripten` (or run `make setup`)."
        )
    return emcc


def emcc_version() -> str:
    """First line of ``emcc --version`` (raises :class:`ToolchainMissing` when absent)."""
    out = subprocess.run([find_emcc(), "--version"], capture_output=True, text=True, env=emcc_env())
    if out.returncode != 0:
        raise ToolchainMissing(f"`emcc --version` failed: {out.stderr.strip()[-500:]}")
    return out.stdout.splitlines()[0].strip() if out.stdout else "emcc (unknown version)"


def _site_dirs() -> tuple[Path, Path, str]:
    import tvm
    import tvm_ffi

    return Path(tvm.__file__).parent, Path(tvm_ffi.__file__).parent, str(tvm.__version__)


def headers_hash() -> str:
    """Hash of our own headers and of this build recipe: part of the runtime cache key."""
    h = hashlib.sha256(_RECIPE.encode())
    for p in sorted(_INCLUDE.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(_INCLUDE).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def _default_cache_root() -> Path | None:
    """The platform's user cache dir, which ``WEBLLM_WIDGET_CACHE`` may have redirected away from."""
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("webllm-widget"))
    except ImportError:  # pragma: no cover
        return Path.home() / ".cache" / "webllm-widget"


def runtime_dir() -> Path:
    """Where the runtime for the installed TVM and our headers lives (built or not).

    ``cache_dir()/runtime/tvm-<version>-<headers hash>``. When ``WEBLLM_WIDGET_CACHE`` points
    elsewhere (an isolated test cache) and the user cache already holds this exact runtime,
    that one is used: it is immutable and keyed by content, and rebuilding costs minutes.
    """
    _, _, version = _site_dirs()
    name = f"tvm-{version}-{headers_hash()}"
    own = cache_dir() / "runtime" / name
    if not is_built(own):
        default = _default_cache_root()
        if default is not None and is_built(default / "runtime" / name):
            return default / "runtime" / name
    return own


def runtime_objects(root: Path | None = None) -> list[Path]:
    """The runtime's wasm objects, in link order."""
    root = root or runtime_dir()
    return [root / f"{part}.o" for part in RUNTIME_PARTS]


def is_built(root: Path | None = None) -> bool:
    return all(p.is_file() for p in runtime_objects(root))


def assemble_tree(dest: Path) -> Path:
    """Lay out ``dest`` as the TVM source root the wheel's ``web/Makefile`` expects; return ``dest/web``.

    Files are copied, not linked: the runtime sources include each other with ``../`` paths,
    and those must resolve inside this tree.
    """
    tvm_dir, ffi_dir, _ = _site_dirs()
    for src in (tvm_dir / "web" / "Makefile", tvm_dir / "web" / "emcc", tvm_dir / "src" / "runtime",
                tvm_dir / "include" / "tvm" / "runtime", ffi_dir / "include", ffi_dir / "src"):
        if not src.exists():
            raise ToolchainMissing(
                f"{src} is missing from the installed TVM packages; reinstall them with "
                "`pip install --force-reinstall apache-tvm==0.27.0.post1`."
            )
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(tvm_dir / "web", dest / "web", ignore=shutil.ignore_patterns(
        "__pycache__", "node_modules", "dist", "lib"))
    shutil.copytree(tvm_dir / "include", dest / "include", ignore=ignore)
    shutil.copytree(tvm_dir / "src" / "runtime", dest / "src" / "runtime", ignore=ignore)
    ffi = dest / "3rdparty" / "tvm-ffi"
    shutil.copytree(ffi_dir / "include", ffi / "include", ignore=ignore)
    shutil.copytree(ffi_dir / "src", ffi / "src", ignore=ignore)
    shutil.copytree(ffi_dir / "3rdparty" / "dlpack", ffi / "3rdparty" / "dlpack", ignore=ignore)
    # Our own stand-ins for the headers the wheel lacks.
    shutil.copytree(_INCLUDE / "src" / "support", dest / "src" / "support", dirs_exist_ok=True)
    shutil.copytree(_INCLUDE / "tvm" / "support", dest / "include" / "tvm" / "support", dirs_exist_ok=True)
    shutil.copytree(_INCLUDE / "compiler-rt", dest / "3rdparty" / "compiler-rt", dirs_exist_ok=True)
    return dest / "web"


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=emcc_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        log = (proc.stdout + proc.stderr)[-6000:]
        raise CompileError(
            f"building the TVM web runtime failed at {what}; the tail of the log:\n{log}",
            detail={"cmd": cmd},
        )


def ensure_runtime(progress: bool = True) -> Path:
    """Build (once) and return the directory holding the runtime's ``.bc`` and ``.o`` files.

    The directory is ``cache_dir()/runtime/tvm-<version>-<hash of our headers>/`` and appears
    atomically: it holds either every file or is absent. A second call returns at once.
    Raises :class:`ToolchainMissing` when emcc is absent, :class:`CompileError` when a build step fails.
    """
    final = runtime_dir()
    if is_built(final):
        return final
    find_emcc()
    final.parent.mkdir(parents=True, exist_ok=True)
    # Several processes (tests, notebooks) may ask at once: one builds, the others wait for it.
    with open(final.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_built(final):
            return final
        return _build_runtime(final, progress)


def _build_runtime(final: Path, progress: bool) -> Path:
    steps = [f"{p}.bc" for p in RUNTIME_PARTS] + [f"{p}.o" for p in RUNTIME_PARTS]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(steps), desc="TVM web runtime (once per TVM version, ~3 min of CPU)", unit="file")
    t0 = time.time()
    jobs = max(1, min(3, os.cpu_count() or 1))
    try:
        with atomic_dir(final) as tmp:
            web = assemble_tree(tmp / "tvm")
            if bar:
                bar.set_postfix_str("bitcode")
            # One make for all three: the two small ones compile beside the big one.
            _run(["make", "-j", str(jobs), *(f"dist/wasm/{p}.bc" for p in RUNTIME_PARTS)], web, "the .bc files")
            for part in RUNTIME_PARTS:
                shutil.copy2(web / "dist" / "wasm" / f"{part}.bc", tmp / f"{part}.bc")
            if bar:
                bar.update(len(RUNTIME_PARTS))
                bar.set_postfix_str("wasm objects")

            def to_object(part: str) -> None:
                # A wasm object (not bitcode) links several times faster in every later link.
                _run([find_emcc(), "-O3", "-c", f"{part}.bc", "-o", f"{part}.o"], tmp, f"{part}.o")
                if bar:
                    bar.update(1)

            with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
                for fut in [pool.submit(to_object, p) for p in RUNTIME_PARTS]:
                    fut.result()
            shutil.rmtree(tmp / "tvm")
            tmp.chmod(0o755)  # mkdtemp made it private; the cache is readable like any other
            (tmp / "BUILD_INFO").write_text(
                f"emcc: {emcc_version()}\nseconds: {time.time() - t0:.0f}\nheaders: {headers_hash()}\n")
    finally:
        if bar:
            bar.close()
    return final


def main(argv: list[str] | None = None) -> int:
    """``python -m webllm_widget.compile.runtime``: build the runtime and print where it is."""
    try:
        path = ensure_runtime(progress=True)
    except (ToolchainMissing, CompileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
