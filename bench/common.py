"""Shared by the benchmarks: where results go, what machine ran them, and the browser/JupyterLab harness."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
BUILD = BENCH / "build"

# The browser and JupyterLab drivers live with the tests (tests/helpers/); benchmarks reuse them.
if str(ROOT / "tests" / "helpers") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests" / "helpers"))


def machine() -> dict:
    """CPU, cores, memory, OS, Python and Chromium versions: what a number in the results depends on."""
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            # Other work on the machine slows every number here: keep the load beside them.
            "loadavg_1_5_15": [round(x, 1) for x in os.getloadavg()]}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_gb"] = round(int(line.split()[1]) / 1e6, 1)
                break
    except OSError:
        pass
    try:
        from browser import find_chromium

        info["chromium"] = subprocess.run([find_chromium(), "--version"], capture_output=True, text=True,
                                          timeout=30).stdout.strip()
    except Exception as e:  # noqa: BLE001 - a missing browser is reported by the benchmark itself
        info["chromium"] = f"unknown ({type(e).__name__})"
    return info


def cpu_jiffies() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (from /proc/stat)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(f[:8]) - idle) / hz, sum(f[:8]) / hz


def busy_cores(seconds: float = 2.0) -> float:
    """How many cores other processes kept busy over the next ``seconds`` (0 = idle machine)."""
    b0, _ = cpu_jiffies()
    time.sleep(seconds)
    b1, _ = cpu_jiffies()
    return (b1 - b0) / seconds


def wait_quiet(max_wait_s: float = 120.0, below: float = 0.5, window_s: float = 3.0) -> dict:
    """Wait (up to ``max_wait_s``) until other work keeps fewer than ``below`` cores busy over ``window_s``.

    The machine is shared: a one-thread speed measured while other jobs hold both cores says more about
    them than about the engine. Returns what was seen: ``{"quiet": bool, "busy_cores", "waited_s", "loadavg_1"}``.
    """
    t0 = time.perf_counter()
    while True:
        busy = busy_cores(window_s)
        waited = time.perf_counter() - t0
        if busy < below or waited >= max_wait_s:
            return {"quiet": busy < below, "busy_cores": round(busy, 2), "waited_s": round(waited, 1),
                    "threshold_cores": below, "loadavg_1": round(os.getloadavg()[0], 2)}


async def load_builtin(eng, device: str) -> tuple[dict, float]:
    """Load the built-in model's ``device`` build into a started ``HeadlessEngine``: what the load reported and
    how many seconds it took."""
    from webllm_widget.models.devices import model_spec

    spec, paths = model_spec(None, device)
    eng.blobs.update(paths)
    t = time.perf_counter()
    info = await eng.load(dict(spec))
    return info, time.perf_counter() - t


def write_result(name: str, data: dict, out_dir: Path | None = None) -> Path:
    """Write ``<out_dir>/<name>.json`` atomically (with the machine and a UTC timestamp); return its path."""
    out_dir = Path(out_dir or RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(), **data}
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)
    return path


def esbuild(entry: Path, out: Path) -> Path:
    """Bundle one page-side TypeScript entry of the benchmarks with the project's esbuild (js/node_modules)."""
    exe = ROOT / "js" / "node_modules" / ".bin" / "esbuild"
    if not exe.exists():
        raise RuntimeError(f"{exe} is missing: run `make setup` (npm ci in js/) first")
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(exe), str(entry), "--bundle", "--format=esm", "--target=es2022", f"--outfile={out}",
                    "--log-level=warning",
                    # tvmjs reaches for Node modules only under Node; the page never loads them.
                    *[f"--external:{m}" for m in ("fs", "path", "perf_hooks", "crypto", "ws", "url", "child_process")]], check=True)
    return out


@contextlib.contextmanager
def private_cache(prefix: str):
    """A model cache of this process's own for the block (``$WEBLLM_WIDGET_CACHE``): models and libraries are
    built anew, the compiler's runtime and sources are linked from the usual cache. For a library built with
    arguments the cache keys do not see (they see the compiler's sources): a schedule variant for an A/B."""
    import shutil
    import tempfile

    from webllm_widget.cache import cache_dir

    usual = cache_dir()
    mine = Path(tempfile.mkdtemp(prefix=prefix))
    for entry in usual.iterdir():  # everything but the built models and libraries
        if entry.name not in ("models", "model-libs", "libs", "locks"):
            os.symlink(entry, mine / entry.name)
    before = os.environ.get("WEBLLM_WIDGET_CACHE")
    os.environ["WEBLLM_WIDGET_CACHE"] = str(mine)
    try:
        yield mine
    finally:
        if before is None:
            os.environ.pop("WEBLLM_WIDGET_CACHE", None)
        else:
            os.environ["WEBLLM_WIDGET_CACHE"] = before
        shutil.rmtree(mine, ignore_errors=True)


def copy_builtin_webgpu_library(out: Path) -> str:
    """Build (or find) the built-in model's hardware-GPU folder and copy its model library to ``out``; its id."""
    import shutil

    from webllm_widget.models.devices import model_spec

    spec, paths = model_spec(None, "webgpu")
    lib = next(f for f in spec["files"] if f["name"] == spec.get("lib", "model.wasm"))
    shutil.copyfile(paths[lib["sha256"]], out)
    return spec["id"]
