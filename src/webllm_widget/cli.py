"""The ``webllm-widget`` command: ``doctor`` (what is installed), ``build`` (compile a model), ``chat`` (run one).

What ``build`` and ``chat`` need (the compiler, the headless engine) is imported only when they run, so
``webllm-widget doctor`` works even where TVM or the browser side is broken.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import WebLLMWidgetError

#: Python distributions the package needs at run time, and the ones its tests need.
REQUIRED_PY = ["anywidget", "traitlets", "ipywidgets", "numpy", "gguf", "tqdm", "platformdirs"]
#: The ``compile`` extra (``pip install 'webllm-widget[compile]'``): compiling models and the teaching widget.
COMPILE_PY = ["apache-tvm"]
TEST_PY = ["pytest", "pytest-timeout", "playwright", "jupyterlab", "ipykernel", "nbformat", "marimo"]
TVM_PIN = "0.27.0.post1"
_REPO = Path(__file__).resolve().parents[2]
_FIX_SETUP = "run `make setup` (or `bash scripts/setup.sh`) in the project folder as root"


@dataclass
class Check:
    """One line of the doctor's report."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tool_version(cmd: list[str], env: dict | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if out.returncode == 0 and text else None


def _compiling() -> bool:
    """Whether the ``compile`` extra is installed: then its toolchain is required, else only reported."""
    from .compile.keys import compiler_available

    return compiler_available()


def _check_python() -> list[Check]:
    checks = []
    for group, names, required, fix in (
            ("python", REQUIRED_PY, True, f"pip install -e '.[test]' ({_FIX_SETUP})"),
            ("python (compile)", COMPILE_PY, False, "pip install 'webllm-widget[compile]' (compiling models and "
                                                    "the WebGPU teaching widget; chatting works without it)"),
            ("python (tests)", TEST_PY, False, f"pip install -e '.[compile,test]' ({_FIX_SETUP})")):
        missing = [n for n in names if _dist_version(n) is None]
        have = ", ".join(f"{n} {_dist_version(n)}" for n in names if n not in missing)
        checks.append(Check(group, not missing, have if not missing else f"missing: {', '.join(missing)}",
                            fix, required))
    return checks


def _check_tvm() -> Check:
    if not _compiling():
        return Check("apache-tvm", False, "not installed: chatting works; compiling needs it",
                     "pip install 'webllm-widget[compile]'", required=False)
    try:
        import tvm  # noqa: F401  (imported to prove it loads, not only that it is installed)

        version = str(tvm.__version__)
    except Exception as e:  # a broken native library shows up here
        return Check("apache-tvm", False, f"cannot import tvm: {e}",
                     f"pip install apache-tvm=={TVM_PIN}")
    ok = version == TVM_PIN
    return Check("apache-tvm", ok, f"tvm {version}" + ("" if ok else f" (this project pins {TVM_PIN})"),
                 f"pip install apache-tvm=={TVM_PIN}")


def _check_emcc() -> Check:
    from .compile.runtime import emcc_env

    path = shutil.which("emcc")
    version = _tool_version([path, "--version"], env=emcc_env()) if path else None
    return Check("emcc", bool(version), f"{version} ({path})" if version else "emcc not found on PATH",
                 "apt-get install -y emscripten", required=_compiling())


def _check_runtime() -> Check:
    if not _compiling():
        return Check("TVM web runtime", False, "not needed without the compile extra", required=False)
    try:
        from .compile.runtime import is_built, runtime_dir

        root = runtime_dir()
        ok = is_built(root)
    except Exception as e:
        return Check("TVM web runtime", False, f"cannot tell: {e}", _FIX_SETUP)
    return Check("TVM web runtime", ok, str(root) if ok else f"not built yet (would be {root})",
                 "python -m webllm_widget.compile.runtime (~2 min, once per TVM version)")


def _check_chromium() -> Check:
    try:
        from .browser import find_chromium

        exe = find_chromium()
    except Exception as e:
        return Check("chromium", False, str(e), "apt-get install -y chromium")
    version = _tool_version([exe, "--version"])
    return Check("chromium", True, f"{version or 'version unknown'} ({exe})", "apt-get install -y chromium")


def _check_node() -> list[Check]:
    out = []
    for tool, fix in (("node", "apt-get install -y nodejs"), ("npm", "apt-get install -y npm")):
        path = shutil.which(tool)
        version = _tool_version([path, "--version"]) if path else None
        out.append(Check(tool, bool(version), f"{version} ({path})" if version else f"{tool} not found",
                         fix, required=False))
    return out


def _check_bundle() -> Check:
    static = Path(__file__).resolve().parent / "static"
    files = sorted(p.name for p in static.glob("*.js")) if static.is_dir() else []
    return Check("JS bundle", bool(files), f"{static}: {', '.join(files)}" if files else f"nothing in {static}",
                 "cd js && npm ci && npm run build")


def _check_webgpu(timeout_s: float) -> Check:
    """Start headless Chromium and ask it for a WebGPU adapter (slow: a few seconds)."""
    import asyncio

    try:
        from .browser import PageServer, launch_webgpu

        def route(path: str):
            return (b"<!doctype html><title>probe</title>", "text/html")

        async def probe():
            with PageServer(route) as srv:
                async with launch_webgpu(srv) as b:
                    return b.adapter, b.flags

        adapter, flags = asyncio.run(asyncio.wait_for(probe(), timeout_s))
    except Exception as e:
        return Check("WebGPU in Chromium", False, f"{type(e).__name__}: {str(e)[:300]}",
                     "apt-get install -y chromium; pip install playwright (never `playwright install`)",
                     required=False)
    feats = ", ".join(sorted(adapter.get("features") or [])) or "none"
    return Check("WebGPU in Chromium", True,
                 f"{adapter.get('vendor')} / {adapter.get('architecture')}"
                 f"{' (fallback adapter)' if adapter.get('is_fallback') else ''}; features: {feats}",
                 required=False)


def run_doctor(probe_webgpu: bool = False, timeout_s: float = 60.0) -> list[Check]:
    """Every check of ``webllm-widget doctor``, in report order."""
    checks = [*_check_python(), _check_tvm(), _check_emcc(), _check_runtime(), _check_chromium(),
              *_check_node(), _check_bundle()]
    if probe_webgpu:
        checks.append(_check_webgpu(timeout_s))
    return checks


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_doctor(probe_webgpu=args.webgpu)
    width = max(len(c.name) for c in checks)
    for c in checks:
        mark = "ok  " if c.ok else ("MISS" if c.required else "warn")
        print(f"[{mark}] {c.name:<{width}}  {c.detail}")
        if not c.ok and c.fix:
            print(f"       {'':<{width}}  fix: {c.fix}")
    if not args.webgpu:
        print("(add --webgpu to start headless Chromium and probe its WebGPU adapter)")
    bad = [c.name for c in checks if c.required and not c.ok]
    if bad:
        print(f"\nmissing: {', '.join(bad)}", file=sys.stderr)
        return 1
    print("\neverything required is present")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """``webllm-widget build --gguf PATH | --hf DIR | --default [--quantization Q] [--device D] [--out DIR]``:
    prints the model folder it wrote."""
    from .errors import BadModel

    quant = getattr(args, "quantization", None)
    device = getattr(args, "device", None) or "webgpu"
    out = getattr(args, "out", None)
    if getattr(args, "default", False):
        from . import models

        folder = models.default(quantization=quant, device=device, out=out)
    else:
        from .compile.pipeline import build_model_folder

        source = getattr(args, "gguf", None) or getattr(args, "hf", None)
        if not source:
            raise BadModel("nothing to build: pass --gguf PATH, --hf DIR or --default.")
        folder = build_model_folder(source, quantization=quant, device=device, out=out)
    print(folder)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    """``webllm-widget chat [PROMPT] [--model M] [--device D] [--system S] [--temperature T] ...``."""
    from .headless.terminal import cli_chat

    return cli_chat(args)


def make_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    p = argparse.ArgumentParser(
        prog="webllm-widget",
        description="Run a language model in the browser on WebGPU, compiled with Apache TVM.")
    p.add_argument("--version", action="version", version=f"webllm-widget {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser("doctor", help="report what is installed and what is missing, with fixes")
    d.add_argument("--webgpu", action="store_true",
                   help="also start headless Chromium and probe its WebGPU adapter")
    d.set_defaults(func=cmd_doctor)

    b = sub.add_parser("build", help="compile a model (GGUF file, Hugging Face folder, or the default)")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--gguf", type=Path, metavar="PATH", help="a GGUF checkpoint")
    src.add_argument("--hf", type=Path, metavar="DIR", help="a Hugging Face model folder")
    src.add_argument("--default", action="store_true", help="the built-in offline model (SmolLM2-135M-Instruct)")
    b.add_argument("--quantization", default=None, help="e.g. q4f32_1 (default: chosen per source)")
    b.add_argument("--device", choices=["webgpu", "cpu"], default="webgpu", help="where the model will run")
    b.add_argument("--out", type=Path, metavar="DIR", default=None,
                   help="write the model folder here (default: the cache)")
    b.set_defaults(func=cmd_build)

    c = sub.add_parser("chat", help="ask the model in headless Chromium and print the answer")
    c.add_argument("prompt", nargs="*", help="the question (omit for an interactive chat)")
    c.add_argument("--model", default=None,
                   help="a model folder, GGUF file, Hugging Face folder or MLC prebuilt id (default: the built-in model)")
    c.add_argument("--device", choices=["auto", "webgpu", "cpu"], default="auto",
                   help="auto: WebGPU on a hardware adapter, else the page's CPU")
    c.add_argument("--system", default=None, help="system prompt")
    c.add_argument("--max-tokens", dest="max_tokens", type=int, default=None, help="default 256")
    c.add_argument("--temperature", type=float, default=None)
    c.add_argument("--top-p", dest="top_p", type=float, default=None)
    c.add_argument("--seed", type=int, default=None)
    c.add_argument("--fresh-profile", dest="fresh_profile", action="store_true",
                   help="use a new browser profile (an empty page cache: every model byte is sent again)")
    c.add_argument("--show-browser", dest="show_browser", action="store_true", help="run Chromium with a window")
    c.set_defaults(func=cmd_chat)
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except WebLLMWidgetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
