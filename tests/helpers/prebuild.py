"""Build the model folders and libraries that later tests need in one background process, while earlier tests run.

On a fresh machine (CI) every model build is cold: tens of seconds of TVM and emcc each, on one core, while many
browser and Jupyter tests leave a core waiting on the page or the server. Once collection is known,
``tests/conftest.py`` starts this module as one subprocess (at a lower priority than the tests) with the builds the
selected tests will need, in the order they will need them. The builds are the same calls the tests make (each
recipe below calls the helper its test calls), so they land under the same content keys; a test that reaches a
build still in flight waits on that build's lock (``webllm_widget.cache.build_lock``) and then reads the result
instead of building it twice. Nothing is assumed: a recipe that fails or was not reached only means the test builds
it itself, as it would without this process.

Visible: the process writes one JSON line per recipe (name, seconds, whether it did work, any error) to its log,
and the pytest summary lists them (``prebuild:`` lines). ``WEBLLM_WIDGET_PREBUILD=0`` turns it off.

    python tests/helpers/prebuild.py --log /tmp/prebuild.jsonl family:mistral-hf:cpu smollm2-cpu
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ENV = "WEBLLM_WIDGET_PREBUILD"


# ------------------------------------------------------------------------------------------------ recipes

def _family(case: str, device: str) -> Callable[[], Any]:
    def build():
        from families import build as family_build

        return family_build(case, device)[0]
    return build


def _tiny_cpu_library(isa: str) -> Callable[[], Any]:
    def build():
        from cpu_page import tiny_ggml_cpu_library

        with tempfile.TemporaryDirectory(prefix="wlw-prebuild-") as d:
            return tiny_ggml_cpu_library(Path(d), isa)[-1]
    return build


def _tiny_library(case: str, schedule: str) -> Callable[[], Any]:
    def build():
        from webgpu_model import tiny_library

        with tempfile.TemporaryDirectory(prefix="wlw-prebuild-") as d:
            return tiny_library(case, schedule, d)[-1]
    return build


def _tiny_cpu_folder() -> Any:
    from cpu_page import tiny_cpu_folder

    with tempfile.TemporaryDirectory(prefix="wlw-prebuild-") as d:
        return tiny_cpu_folder(Path(d))


def _tiny_folder(name: str, quantization: str = "q4f32_1") -> Callable[[], Any]:
    def build():
        from tiny import tiny_folder

        return tiny_folder(name, quantization=quantization)
    return build


def _tiny_seed0_cpu() -> Any:
    """What a CPU Chat of the suite's tiny_folder (or of its HF source) resolves: the source built for the CPU."""
    from tiny import tiny_folder

    from webllm_widget.models.devices import cpu_model_folder

    return cpu_model_folder(str(tiny_folder("seed0")), progress=False)


def _tiny_seed0_fallback() -> Any:
    """What a WebGPU Chat of the tiny Llama's HF folder (seed 0) resolves for a software adapter."""
    from tiny import TinyLlama

    from webllm_widget import models
    from webllm_widget.cache import cache_dir

    hf = TinyLlama.make(seed=0).write_hf(cache_dir() / "test-sources" / "tiny-llama-seed0")
    return models.resolve(str(hf), progress=False, schedule="fallback").folder


def _project_wheel() -> Any:
    from wheels import project_wheel

    return project_wheel()


def _smollm2(device: str, schedule: str = "auto") -> Callable[[], Any]:
    def build():
        from webllm_widget import models

        return models.default(device=device, schedule=schedule, progress=False)
    return build


def recipe(name: str) -> Callable[[], Any]:
    """The build called ``name``: ``family:<case>:<device>``, ``tiny-cpu-library:<isa>``, ``tiny-cpu-folder``,
    ``tiny-library:<case>:<schedule>``, ``tiny-folder:<name>[:<quantization>]``, ``tiny-seed0-fallback``,
    ``tiny-seed0-cpu``, ``smollm2-cpu``,
    ``smollm2-webgpu:<schedule>`` (the built-in model's folders, as ``models.default`` builds them),
    ``project-wheel`` (``pip wheel .``, the built-in model's libraries inside)."""
    kind, _, rest = name.partition(":")
    if kind == "family":
        case, device = rest.split(":")
        return _family(case, device)
    if kind == "tiny-cpu-library":
        return _tiny_cpu_library(rest)
    if kind == "tiny-library":
        case, schedule = rest.split(":")
        return _tiny_library(case, schedule)
    if kind == "tiny-cpu-folder":
        return _tiny_cpu_folder
    if kind == "tiny-folder":
        name, _, quantization = rest.partition(":")
        return _tiny_folder(name, quantization or "q4f32_1")
    if kind == "tiny-seed0-cpu":
        return _tiny_seed0_cpu
    if kind == "tiny-seed0-fallback":
        return _tiny_seed0_fallback
    if kind == "project-wheel":
        return _project_wheel
    if kind == "smollm2-cpu":
        return _smollm2("cpu")
    if kind == "smollm2-webgpu":
        return _smollm2("webgpu", rest)
    raise KeyError(name)


#: test_model_webgpu's tests and the tiny library each builds (tests/helpers/webgpu_model.py tiny_library)
TINY_WEBGPU_CASES = {
    "test_q0f32_logits_on_webgpu_match_numpy_reference": "tiny-library:q0f32:auto",
    "test_decode_attention_for_hardware_gpus_over_a_long_context": "tiny-library:q0f32-long:auto",
    "test_q4f32_1_logits_on_webgpu_match_dequantized_reference": "tiny-library:q4f32_1:{schedule}",
    "test_lossless_ggml_logits_on_webgpu_match_the_gguf_weights_exactly": "tiny-library:ggml:{schedule}",
}
SMOLLM2_WEBGPU = ["smollm2-webgpu:auto", "smollm2-webgpu:fallback"]
#: Test modules and the builds they reach. The built-in model: a WebGPU Chat of it resolves the default ("auto")
#: folder and the software adapter's ("fallback") one, ``device="auto"`` the default and the CPU folder; the wheel
#: (test_light_install's ``project_wheel``) carries all four libraries.
MODULES = {
    "test_cpu_engine.py": ["tiny-cpu-folder"],
    "test_webgpu_library_pick.py": ["tiny-seed0-fallback"],
    "test_openai_options.py": ["tiny-seed0-cpu"],
    "test_colab_frames.py": ["tiny-seed0-cpu"],
    "test_no_shader_f16.py": ["tiny-folder:seed0:q4f16_1"],
    "test_chat_jupyter.py": ["tiny-folder:seed0-ctx1024", "smollm2-webgpu:auto", "smollm2-cpu"],
    "test_cpu_smollm2.py": ["smollm2-cpu", "smollm2-webgpu:auto"],
    "test_light_install.py": ["smollm2-cpu", *SMOLLM2_WEBGPU, "project-wheel"],
    "test_wheel.py": ["project-wheel"],
    "test_smollm2_webgpu_logits.py": ["smollm2-webgpu:fallback"],
    "test_structured_output.py": [*SMOLLM2_WEBGPU, "smollm2-cpu"],
    "test_inside_the_llm_jupyter.py": SMOLLM2_WEBGPU,
    "test_kernel_restart.py": ["smollm2-webgpu:auto", "smollm2-cpu"],
    "test_privacy.py": ["smollm2-webgpu:auto", "smollm2-cpu"],
}


def needs(item: Any) -> list[str]:
    """The recipes a collected test item will call (by its module and parameters); [] for most tests."""
    path, name = Path(str(item.fspath)).name, item.name
    params = getattr(getattr(item, "callspec", None), "params", {})
    if path == "test_family_logits.py" and "case" in params:
        return [f"family:{params['case']}:{params['device']}"]
    if path == "test_cpu_library.py" and "tiny_cpu_model" in params:
        return [f"tiny-cpu-library:{params['tiny_cpu_model']}"]
    if path == "test_model_webgpu.py" and (lib := TINY_WEBGPU_CASES.get(name.split("[")[0])):
        return [lib.format(schedule=params.get("schedule", "auto"))]
    return list(MODULES.get(path, []))


def plan(items: list[Any]) -> list[str]:
    """The recipes of the tests that will run, each once, in the order of the first test that needs it."""
    out: list[str] = []
    for item in items:
        if item.get_closest_marker("skip") is not None:
            continue
        for name in needs(item):
            if name not in out:
                out.append(name)
    return out


# ------------------------------------------------------------------------------------------------ the process

class Prebuild:
    """The background process of one test session (started by ``tests/conftest.py``)."""

    def __init__(self, names: list[str], log_dir: Path):
        self.names = names
        self.log = Path(log_dir) / "prebuild.jsonl"
        self.out = Path(log_dir) / "prebuild.out"
        self.t0 = time.perf_counter()
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--log", str(self.log),
                                          *names], stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=lambda: os.nice(10))

    def stop(self) -> None:
        """End the process if it still runs (a stopped build leaves nothing behind: builds land atomically)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def records(self) -> list[dict]:
        try:
            return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]
        except OSError:
            return []

    def summary(self) -> list[str]:
        """One line per planned recipe: built (seconds), already cached, failed (why) or not reached."""
        done = {r["recipe"]: r for r in self.records()}
        lines = [f"prebuild: {len(self.names)} builds planned in a background process (pid {self.proc.pid}, "
                 f"exit {self.proc.returncode}); log {self.log}"]
        for name in self.names:
            r = done.get(name)
            if r is None:
                lines.append(f"prebuild: {name}: not reached (the test built it if it ran)")
            elif r.get("error"):
                lines.append(f"prebuild: {name}: failed after {r['seconds']:.1f} s ({r['error']}); the test built it")
            else:
                what = ("built by a test first (waited for it)" if r.get("waited") else "built") if r["built"] \
                    else "already cached"
                lines.append(f"prebuild: {name}: {what} in {r['seconds']:.1f} s, finished {r['at']:.0f} s after the "
                             "process started")
        return lines


def start(config: Any, items: list[Any]) -> Prebuild | None:
    """Start the background builds for ``items`` unless turned off, collecting only, or nothing to build."""
    if os.environ.get(ENV, "1") == "0" or config.getoption("collectonly", False):
        return None
    names = plan(items)
    if not names:
        return None
    return Prebuild(names, Path(tempfile.mkdtemp(prefix="wlw-prebuild-")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log", required=True, help="JSON lines: one record per recipe")
    ap.add_argument("names", nargs="+")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    t_start = time.perf_counter()
    parent = os.getppid()
    for name in args.names:
        if os.getppid() != parent:  # the test session is gone (killed without its teardown): nobody needs the rest
            print("prebuild: the test session ended; stopping", flush=True)
            break
        t0 = time.perf_counter()
        rec: dict[str, Any] = {"recipe": name}
        try:
            from webllm_widget.cache import LOCK_WAITS, cache_dir

            before, waits = _cache_entries(cache_dir()), len(LOCK_WAITS)
            recipe(name)()
            rec["built"] = _cache_entries(cache_dir()) != before
            rec["waited"] = [[n, round(s, 1)] for n, s in LOCK_WAITS[waits:]]
        except Exception as e:  # the test that needs it builds it and shows the error there
            rec["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        rec["at"] = round(time.perf_counter() - t_start, 1)
        print(f"prebuild: {json.dumps(rec)}", flush=True)
        with open(args.log, "a") as f:
            f.write(json.dumps(rec) + "\n")
    return 0


def _cache_entries(root: Path) -> set[str]:
    """Names of the built entries (model folders and libraries) in the cache, to tell a build from a cache hit."""
    out = set()
    for sub in ("models", "model-libs", "model-libs-cpu", "libs"):
        d = root / sub
        if d.is_dir():
            out.update(f"{sub}/{p.name}" for p in d.iterdir() if not p.name.startswith("."))
    return out


if __name__ == "__main__":
    sys.exit(main())
