"""The project's wheel, built once per content hash, and a venv that sees this environment without apache-tvm.

    whl = project_wheel()                 # ``pip wheel .`` (libraries of the built-in model included), cached
    venv = light_venv(tmp_path)           # fresh venv: every package here except TVM and this checkout
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: What the light install must not see: the compiler (apache-tvm and its ffi) and this environment's editable
#: install of the source checkout.
NOT_IN_LIGHT_VENV = ("tvm", "tvm_ffi", "apache_tvm", "webllm_widget", "_editable_impl_webllm_widget", "__editable__")


def source_hash() -> str:
    """Hash of everything that goes into the wheel: the build config, the hook, the package and its bundle."""
    h = hashlib.sha256()
    files = [ROOT / "pyproject.toml", ROOT / "hatch_build.py"]
    pkg = ROOT / "src" / "webllm_widget"
    files += sorted(p for p in pkg.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                    and "libs" not in p.relative_to(pkg).parts[:2])
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def project_wheel() -> Path:
    """The project's wheel, built once per content hash (``pip wheel .`` with the current environment)."""
    from webllm_widget import cache

    out = cache.cache_dir() / "test-wheels" / source_hash()
    found = sorted(out.glob("webllm_widget-*.whl"))
    if found:
        return found[0]
    # one build at a time (the background prebuild, tests/helpers/prebuild.py, builds it too): whoever waited finds it
    with cache.build_lock(f"test-wheel-{out.name}"):
        found = sorted(out.glob("webllm_widget-*.whl"))
        return found[0] if found else _build_wheel(out)


def _build_wheel(out: Path) -> Path:
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, WEBLLM_WIDGET_WHEEL_LIBS="require")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                        "-w", str(tmp)], capture_output=True, text=True, env=env, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (built,) = tmp.glob("webllm_widget-*.whl")
    out.mkdir(parents=True, exist_ok=True)
    os.replace(built, out / built.name)
    tmp.rmdir()
    return out / built.name


def light_venv(tmp_path: Path) -> Path:
    """A fresh venv that sees this environment's packages except apache-tvm (and its ffi) and this checkout.

    The packages are linked one by one into a folder on the venv's path, so nothing is downloaded, and
    ``import tvm`` fails there as on a machine where it was never installed.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    shared = tmp_path / "parent-packages"
    shared.mkdir()
    for root in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for entry in Path(root).iterdir():
            if entry.name.startswith(NOT_IN_LIGHT_VENV) or entry.suffix == ".pth" or (shared / entry.name).exists():
                continue
            (shared / entry.name).symlink_to(entry)
    (site / "_parent_env.pth").write_text(f"{shared}\n")
    return venv
