"""llama.cpp baseline for the benchmarks: node-llama-cpp's prebuilt CPU binary on the same GGUF, same prompts.

    python bench/llamacpp.py                       # built-in SmolLM2 GGUF, prompts 32 and 128, 32 tokens, 3 runs
    python bench/llamacpp.py --prompts 32 --decode 64 --runs 5 --threads 1

``llama-cpp-python`` compiles llama.cpp from source (over 35 minutes on this machine), so the baseline runs
through npm ``node-llama-cpp`` (pinned in ``bench/llamacpp/package-lock.json``), which ships prebuilt
linux-x64 libraries. The first use runs ``npm ci --omit=optional --ignore-scripts`` in ``bench/llamacpp/``
(~85 MB; the optional CUDA/Vulkan/ARM builds and the package's postinstall download step are left out);
later uses reuse it. At run time nothing is built or downloaded (``build: "never"``, ``skipDownload``).
Where node/npm or the binary is missing, :func:`run` returns ``{"skipped": "<why>"}`` instead of failing.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent / "llamacpp"
STAMP = HERE / "node_modules" / ".webllm-widget-lock-sha256"


def _lock_hash() -> str:
    return hashlib.sha256((HERE / "package-lock.json").read_bytes()).hexdigest()


def ensure_installed() -> str | None:
    """Install bench/llamacpp's pinned packages once (``npm ci``); return ``None`` when ready, else why not."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return "node/npm not found on PATH (the llama.cpp baseline runs through npm node-llama-cpp)"
    binary = HERE / "node_modules" / "@node-llama-cpp" / "linux-x64" / "bins"
    if STAMP.exists() and STAMP.read_text().strip() == _lock_hash() and binary.is_dir():
        return None
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return f"only the linux-x64 prebuilt binary is pinned (this is {sys.platform}/{os.uname().machine})"
    print("llama.cpp baseline: npm ci in bench/llamacpp (first use, ~85 MB)…", file=sys.stderr)
    r = subprocess.run([npm, "ci", "--omit=optional", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=HERE,
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        return f"`npm ci` in bench/llamacpp failed: {(r.stderr or r.stdout).strip()[-400:]}"
    if not binary.is_dir():
        return "npm ci finished but @node-llama-cpp/linux-x64 has no prebuilt binaries"
    STAMP.write_text(_lock_hash())
    return None


def run(gguf: Path, prompts: list[list[int]], decode: int, runs: int, threads: int = 1) -> dict:
    """Prefill and decode tok/s of llama.cpp for each prompt (exact token ids), greedy, ``runs`` times each.

    Returns ``{"prompts": {"<len>": {"prefill_tok_s": {median,min,max,runs}, "decode_tok_s": …}}, "threads", …}``
    or ``{"skipped": why}`` when node, npm or the prebuilt binary is not available.
    """
    why = ensure_installed()
    if why:
        return {"skipped": why}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump([list(map(int, p)) for p in prompts], f)
    try:
        r = subprocess.run(["node", str(HERE / "run.mjs"), "--gguf", str(gguf), "--prompts-json", f.name,
                            "--decode", str(decode), "--runs", str(runs), "--threads", str(threads)],
                           capture_output=True, text=True, timeout=1200)
    finally:
        os.unlink(f.name)
    if r.returncode != 0:
        return {"skipped": f"node-llama-cpp run failed: {(r.stderr or r.stdout).strip()[-600:]}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def prompt_ids(n: int) -> list[int]:
    """A fixed prompt of ``n`` ordinary vocabulary ids (100 and up: no control tokens); bench/cpu.py uses the same."""
    return [(1009 + 37 * i) % 40000 + 100 for i in range(n)]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", help="GGUF file (default: the built-in SmolLM2-135M)")
    ap.add_argument("--prompts", default="32,128", help="prompt lengths in tokens")
    ap.add_argument("--decode", type=int, default=32, help="tokens decoded per run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.gguf:
        gguf = Path(args.gguf)
    else:
        from webllm_widget import models

        gguf = models.default_gguf()
    res = run(gguf, [prompt_ids(int(n)) for n in args.prompts.split(",") if n], args.decode, args.runs, args.threads)
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
