"""Benchmark: the built-in model's decode on a real GPU (Node + Dawn on Vulkan), beside that GPU's bandwidth bound.

The widget's own engine (js/src/engine: web-llm + the tvmjs runtime + our model library, the same WGSL kernels a
browser runs) is bundled for Node (bench/gpu/engine_node.ts) and driven on Dawn for Node (npm ``webgpu``), so a
GPU machine without a browser can run it. Three steps, because the GPU machine may be another one:

    python bench/gpu_device.py prepare [--prompts 32,128,512 --max-tokens 128 --runs 5]
        # here: bundle the engine, stage node, dawn.node, a Vulkan loader .deb and the model folder (what
        # Chat(device="webgpu") sends for the built-in model) under .gpu/p1, p2, ... (each <= --part-mib)
    python3 bench/gpu/device_run.py stash             # there, one call per part (.gpu/pN carried), then:
    python3 bench/gpu/device_run.py run --unpack-debs --profile --out DIR   # (stdlib + torch)
    python bench/gpu_device.py collect DIR/gpu_raw.json   # here: -> bench/results/gpu.json with the bound

The browser beside it (the product's runtime): Debian's Chromium carried there, the widget's runner page in it.

    python bench/gpu_device.py prepare-chrome              # here: .gpu/c1, c2 (Chromium + its libs + page bundles)
    python3 bench/gpu/chrome_run.py --stash-only            # there, one call per part (c1, c2, p1..), then:
    python3 bench/gpu/chrome_run.py --out DIR [--variant NAME="--flag;--flag"]   # -> DIR/chrome_raw.json
    python bench/gpu_device.py collect DIR/gpu_raw.json --chrome DIR/chrome_raw.json [more chrome_raw.json]

Browser only (``prepare --no-node``): ``device_run.py probe`` records the GPU, its copy bandwidth and the manifest
in DIR/gpu_raw.json without running Node. ``chrome_run.py --upstream-dispatch`` times the job again with tvmjs's own
kernel dispatch beside the engine's batched one (same call); ``prepare --baseline-lib OLD/model.wasm`` stages an
earlier library of the same model as job ``baseline`` (``chrome_run.py --job baseline``), put beside the new one by
``collect --chrome-baseline``.

Real model shapes and MLC's official library (issue #16: the 1B shape's share of the bound, and the comparison a
user would make). ``--shape`` builds bench/shapes.py's random-weight Hugging Face folder of that shape with
``webllm-widget build --hf`` (q4f32_1) and stages it without its parameter shards; ``--official-lib`` stages MLC's
prebuilt Qwen2-0.5B library (from github.com/mlc-ai/binary-mlc-llm-libs, e.g. ``git --git-dir=MIRROR show
HEAD:web-llm-models/v0_2_48/Qwen2-0.5B-Instruct-q4f32_1-ctx4k_cs1k-webgpu.wasm > FILE``) as job ``official``: its
embedded ``_metadata`` gives the parameter list, bench/official's pages run it with npm ``@mlc-ai/web-llm`` 0.2.79,
beside job ``qwen2-0.5b`` (the project's build of the same shape; same tokenizer, template, prompts). The GPU
machine writes the shards (bench/gpu/random_weights.py; both Qwen2 jobs get the same shard files when their
records match, as they do), so a 1B model travels as its ~10 MB library and layout:

    python bench/gpu_device.py prepare --no-node --no-model --shape llama3.2-1b --official-lib FILE
    python3 bench/gpu/device_run.py probe --unpack-debs --out DIR     # there: the GPU and its copy bandwidth
    python3 bench/gpu/chrome_run.py --job JOB --raw-name chrome_raw_JOB.json --out DIR   # JOB: qwen2-0.5b, official, llama3.2-1b
    python bench/gpu_device.py collect-shapes DIR/gpu_raw.json DIR/chrome_raw_*.json   # gpu.json 'shapes', 'official'

    python bench/gpu_device.py run --if-gpu   # all three on this machine when it has an NVIDIA GPU (make bench)

New beside old in one call: ``--baseline-lib OLD.wasm`` (the built-in model: job ``baseline``),
``--shape-baseline-lib SHAPE=OLD.wasm`` (job ``SHAPE-baseline``: the shape's earlier library, its weights;
``collect-shapes`` makes it the shape's ``before_same_call``), ``--shape-lib-variant SHAPE:NAME=FILE`` (job
``SHAPE--NAME``: another build of the shape, e.g. ``bench/lane_gemv_lib.py``'s, its weights; ``collect-shapes`` puts
it in the shape's ``variants_same_call``) and ``--lib-variant NAME=FILE`` (job ``model-NAME``: another build of the
built-in model, e.g. ``bench/attention_slice_lib.py``'s; ``collect --chrome-lib-variant``)::

    python bench/gpu_device.py prepare --no-node --generate-weights --xz-jobs --static --runs 3 \
        --baseline-lib MAIN/smollm2.wasm --lib-variant slice64=S64.wasm --shape llama3.2-1b \
        --shape-baseline-lib llama3.2-1b=MAIN/llama1b.wasm          # one part (~16 MiB) beside c1, c2
    # there, after c1 and c2 were stashed: chrome_run.py --static /tmp/wlw-gpu-stage --job JOB
    #   --raw-name chrome_raw_JOB.json [--kernels --kernel-runs 1] for each job, device_run.py probe
    python bench/gpu_device.py collect DIR/gpu_raw.json --chrome DIR/chrome_raw_model.json \
        --chrome-baseline DIR/chrome_raw_baseline.json --chrome-lib-variant DIR/chrome_raw_model-slice64.json
    python bench/gpu_device.py collect-shapes DIR/gpu_raw.json DIR/chrome_raw_llama3.2-1b*.json

One transfer for a whole Node + Dawn run: ``prepare --generate-weights --xz-jobs`` stages the built-in model (and
``--baseline-lib``, ``--shape``) without parameter shards, written on the GPU machine as random ones of the same
layout, and compresses each job's files, so node, dawn.node, the engine and several libraries fit one part
(``--part-mib 62``); ``device_run.py run`` then stashes and runs in the same call.

The bound: a decode step reads every weight once (the tied embedding as the LM head) and the KV cache so far;
bytes per token / measured copy bandwidth (torch, device-to-device, bytes read + written) gives the most tokens
per second the memory allows. Results: decode and prefill tok/s (median, min, max over --runs after a warm-up run).
"""
from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_result  # noqa: E402

GPU = ROOT / "bench" / "gpu"
STAGED = ROOT / ".gpu"
#: Datasheet memory bandwidth (GB/s) of GPUs this may meet, for the record beside the measured copy.
DATASHEET_GBPS = {"H100 80GB HBM3": 3350, "H100 PCIe": 2000, "H100 NVL": 3900, "H200": 4800, "A100-SXM4-80GB": 2039,
                  "A100-SXM4-40GB": 1555, "L40S": 864, "L4": 300, "A10G": 600}


def npm_ci() -> Path:
    """bench/gpu/node_modules (npm `webgpu`: prebuilt dawn.node per platform); returns linux-x64 dawn.node."""
    dawn = GPU / "node_modules" / "webgpu" / "dist" / "linux-x64" / "dawn.node"
    if not dawn.exists():
        cmd = ["npm", "ci"] if (GPU / "package-lock.json").exists() else ["npm", "install"]
        subprocess.run(cmd + ["--no-audit", "--no-fund", "--ignore-scripts"], cwd=GPU, check=True)
    return dawn


def bundle(out: Path) -> Path:
    """engine_node.ts + js/src/engine + web-llm, one CommonJS file for Node."""
    exe = ROOT / "js" / "node_modules" / ".bin" / "esbuild"
    if not exe.exists():
        raise SystemExit(f"{exe} is missing: run `make setup` (npm ci in js/) first")
    subprocess.run([str(exe), str(GPU / "engine_node.ts"), "--bundle", "--platform=node", "--format=cjs",
                    "--target=node20", "--minify", "--external:ws", f"--outfile={out}", "--log-level=warning"],
                   check=True)
    return out


def xz(src: Path, dst: Path) -> Path:
    with open(src, "rb") as fi, lzma.open(dst, "wb", preset=6) as fo:
        shutil.copyfileobj(fi, fo, 1 << 22)
    return dst


#: Debian packages the GPU machine may lack: the Vulkan loader, and GLVND (NVIDIA's Vulkan ICD is libGLX_nvidia,
#: which needs libGLdispatch; without it: "Could not get 'vkCreateInstance' ... for ICD libGLX_nvidia.so.0").
DEBS = ["libvulkan1", "libglvnd0", "libglx0", "libgl1", "libegl1", "libopengl0", "libgles2"]


def vulkan_debs(dst: Path) -> list[Path]:
    """Debian's .debs of DEBS (unpacked there only when missing). [] when apt cannot fetch them."""
    lists = Path(tempfile.gettempdir()) / "wlw-apt-amd64"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    o = ["-oAPT::Architecture=amd64", "-oAPT::Architectures=amd64", f"-oDir::State::Lists={lists}"]
    try:
        if not any(lists.glob("*Packages*")):
            subprocess.run(["apt-get", *o, "update", "-qq"], check=True, capture_output=True)
        subprocess.run(["apt-get", *o, "download", *DEBS], cwd=dst, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"   no .debs ({e}); the GPU machine must have a Vulkan loader and GLVND", file=sys.stderr)
        return []
    return sorted(dst.glob("*.deb"))


def model_job(prompt_lengths: list[int], max_tokens: int, runs: int, folder: Path | None):
    """(spec, paths, prompts): the built-in model as Chat(device='webgpu') sends it, or a model folder."""
    from decode import Prompts  # token-exact filler prompts, as bench/decode.py makes them

    if folder is None:
        from webllm_widget import models
        from webllm_widget.models.devices import model_spec

        spec, paths = model_spec(None, "webgpu")
        folder = models.default()
    else:
        from webllm_widget.models.folder import folder_model

        fm = folder_model(folder)
        spec, paths = dict(fm.spec, device="webgpu"), dict(fm.paths)
    # A hardware adapter loads the main library; the fallback build's own files (its model.wasm) stay behind.
    fb = spec.get("webgpu_fallback")
    if fb:
        main_shas = {f["sha256"] for f in spec["files"]}
        spec = dict(spec, webgpu_fallback=None)
        paths = {k: v for k, v in paths.items() if k in main_shas}
        print(f"   staged without the fallback library {fb['id']} (a real GPU loads {spec['id']})", file=sys.stderr)
    spec = {k: v for k, v in spec.items() if v is not None}
    pr = Prompts(folder)
    overhead = pr.template_tokens(folder)
    prompts = {str(n): [{"role": "user", "content": pr.text(max(1, n - overhead))}] for n in prompt_lengths}
    job = {"spec": spec, "prompts": prompts, "max_tokens": max_tokens, "runs": runs, "warmup": 1}
    return job, paths


def baseline_job(model: tuple[dict, dict], lib: Path, suffix: str = "-baseline",
                 weights_of: str | None = None) -> tuple[dict, dict]:
    """The model job with another model library (same weights): an earlier build to time beside the new one in the
    same run, its id the model's plus ``suffix``. Only the library travels; the device joins it to the model job's
    files, or, given ``weights_of`` (that job's name), writes the same random shards as that job does."""
    import hashlib

    job, _paths = model
    spec = json.loads(json.dumps(job["spec"]))
    data = lib.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    name = spec.get("lib", "model.wasm")
    spec["files"] = [dict(f, sha256=sha, size=len(data)) if f["name"] == name else f for f in spec["files"]]
    spec["id"] = spec["id"] + suffix
    job = dict(job, spec=spec)
    if weights_of:
        job["generate"] = {"cache": "tensor-cache.json", "seed": 0, "same_as": weights_of}
    return job, {sha: lib}


def library_sha(spec: dict) -> str | None:
    """sha256 of a job spec's model library."""
    return next((f["sha256"] for f in spec.get("files", []) if f["name"] == spec.get("lib", "model.wasm")), None)


def without_shards(job: dict, paths: dict) -> tuple[dict, dict]:
    """A model job staged without its parameter shards: the GPU machine writes random ones in the same layout
    (job["generate"], bench/gpu/random_weights.py), so a model of ~100 MB travels as its library, tokenizer and
    layout. Decode speed depends on the bytes read, not their values (the module doc of random_weights.py)."""
    shards = {f["sha256"] for f in job["spec"]["files"] if f["name"].startswith("params_shard_")}
    job = dict(job, generate={"cache": "tensor-cache.json", "seed": 0})
    return job, {sha: p for sha, p in paths.items() if sha not in shards}


#: Real model shapes built with random weights (bench/shapes.py: a Hugging Face folder, `webllm-widget build --hf`),
#: staged without their shards: the GPU machine writes random ones (bench/gpu/random_weights.py).
SHAPES = {"qwen2-0.5b": "QWEN2_05B_HF", "llama3.2-1b": "LLAMA32_1B_HF"}
#: MLC's prebuilt library of issue #16's comparison: repository, path, and the web-llm release that runs it.
OFFICIAL = {"repo": "mlc-ai/binary-mlc-llm-libs",
            "path": "web-llm-models/v0_2_48/Qwen2-0.5B-Instruct-q4f32_1-ctx4k_cs1k-webgpu.wasm",
            "web_llm": "0.2.79", "beside": "qwen2-0.5b"}
OFFICIAL_DIR = ROOT / "bench" / "official"
#: Suffix of a shape's job that runs an earlier library of it (``prepare --shape-baseline-lib SHAPE=FILE``), same
#: weights; ``collect-shapes`` puts it beside the shape as ``before_same_call``.
BASELINE = "-baseline"
#: Between a shape and a variant's name in the job of another build of that shape (``prepare --shape-lib-variant
#: SHAPE:NAME=FILE``: job ``SHAPE--NAME``, same weights); ``collect-shapes`` puts it in the shape's ``variants_same_call``.
SHAPE_VARIANT = "--"
#: Prefix of a job that runs another library of the built-in model (``prepare --lib-variant NAME=FILE``: a build
#: with one kernel changed, say), same weights; ``collect --chrome-lib-variant`` puts it beside the model's run.
VARIANT = "model-"


def shape_job(shape: str, prompt_lengths: list[int], max_tokens: int, runs: int, quantization: str = "q4f32_1"):
    """(job, paths) of a real model shape: `build --hf` of bench/shapes.py's random-weight folder, staged without
    its parameter shards (generated on the GPU machine: job["generate"])."""
    import shapes
    from webllm_widget.compile.pipeline import build_model_folder

    folder = build_model_folder(shapes.hf_shape_folder(getattr(shapes, SHAPES[shape])), quantization=quantization)
    job, paths = model_job(prompt_lengths, max_tokens, runs, folder)
    shards = {f["sha256"] for f in job["spec"]["files"] if f["name"].startswith("params_shard_")}
    job["generate"] = {"cache": "tensor-cache.json", "seed": 0}
    job["shape"] = {"name": shape, "folder": str(folder), "hf_config": {k: v for k, v in getattr(shapes, SHAPES[shape]).items()
                                                                        if k != "_name"}}
    return job, {sha: p for sha, p in paths.items() if sha not in shards}


def official_bundles(out: Path) -> list[Path]:
    """bench/official's runner.js and worker.js bundled with MLC's web-llm release (npm ci there, pinned)."""
    if not (OFFICIAL_DIR / "node_modules" / "@mlc-ai" / "web-llm").exists():
        cmd = ["npm", "ci"] if (OFFICIAL_DIR / "package-lock.json").exists() else ["npm", "install"]
        subprocess.run(cmd + ["--no-audit", "--no-fund", "--ignore-scripts"], cwd=OFFICIAL_DIR, check=True)
    exe = ROOT / "js" / "node_modules" / ".bin" / "esbuild"
    outs = []
    for src, name in (("runner.js", "official_runner.js"), ("worker.js", "official_worker.js")):
        subprocess.run([str(exe), str(OFFICIAL_DIR / src), "--bundle", "--format=esm", "--minify",
                        f"--outfile={out / name}", "--log-level=warning"], check=True)
        outs.append(out / name)
    return outs


def official_job(lib: Path, beside: tuple[dict, dict], work: Path) -> tuple[dict, dict]:
    """MLC's prebuilt library as a job beside a shape job of the same model: the library's own ``_metadata`` gives
    its parameters (names, shapes, dtypes, in order), context and prefill chunk sizes. When they are the beside
    job's records in shape and order, its tensor cache (renamed) is the layout, and the GPU machine hands both the
    same shard files (``same_as``); else a layout of their own. Same tokenizer, chat template and prompts."""
    import hashlib

    sys.path.insert(0, str(GPU))
    import random_weights

    data = lib.read_bytes()
    meta = random_weights.wasm_metadata(data)
    bjob, bpaths = beside
    by_name = {f["name"]: bpaths.get(f["sha256"]) for f in bjob["spec"]["files"]}
    mine = json.loads(Path(by_name["tensor-cache.json"]).read_text())
    recs = [r for s in mine["records"] for r in s["records"]]
    same = [(r["shape"], r["dtype"]) for r in recs] == [(p["shape"], p["dtype"]) for p in meta["params"]]
    if same:
        for r, prm in zip(recs, meta["params"]):
            r["name"] = prm["name"]
        cache = mine
    else:
        cache = random_weights.layout_from_metadata(meta["params"])
    d = work / "official"
    d.mkdir(parents=True, exist_ok=True)
    (d / "ndarray-cache.json").write_text(json.dumps(cache, indent=1))
    chat = json.loads(Path(by_name["mlc-chat-config.json"]).read_text())
    chat.update({k: meta[k] for k in ("model_type", "quantization", "context_window_size", "prefill_chunk_size",
                                      "sliding_window_size", "attention_sink_size") if k in meta})
    (d / "mlc-chat-config.json").write_text(json.dumps(chat, indent=1))
    shutil.copyfile(lib, d / lib.name)
    names = [lib.name, "ndarray-cache.json", "mlc-chat-config.json"] + list(chat.get("tokenizer_files") or [])
    for n in chat.get("tokenizer_files") or []:
        shutil.copyfile(by_name[n], d / n)
    names += [p.name for p in official_bundles(d)]
    files, paths = [], {}
    for n in names:
        b = (d / n).read_bytes()
        sha = hashlib.sha256(b).hexdigest()
        files.append({"name": n, "sha256": sha, "size": len(b)})
        paths[sha] = d / n
    files += [{"name": s["dataPath"], "sha256": "", "size": s["nbytes"]} for s in cache["records"]]
    spec = {"id": lib.stem + "-official", "lib": lib.name, "files": files}
    gen = {"cache": "ndarray-cache.json", "seed": 0, **({"same_as": OFFICIAL["beside"]} if same else {})}
    job = dict(bjob, spec=spec, official={**{k: v for k, v in OFFICIAL.items() if k != "beside"},
                                          "library_sha256": hashlib.sha256(data).hexdigest(),
                                          "library_bytes": len(data), "same_layout_as_project": same,
                                          "metadata": {k: v for k, v in meta.items() if k != "params"}},
               generate=gen)
    job.pop("shape", None)
    return job, paths


def source_commit() -> str | None:
    """The checkout's HEAD (with "+dirty" when the model compiler's sources differ from it): which code built the
    staged model library."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src/webllm_widget"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def model_lib(manifest: dict) -> dict:
    """The staged model's folder name (it carries the build's hash), its library's sha256 and the source commit."""
    spec = (manifest.get("jobs", {}).get("model", {}).get("job") or {}).get("spec") or {}
    lib = next((f for f in spec.get("files", []) if f.get("name") == spec.get("lib", "model.wasm")), {})
    return {"folder": spec.get("id"), "schedule": spec.get("schedule"), "library_sha256": lib.get("sha256"),
            "library_bytes": lib.get("size"), "source_commit": manifest.get("source_commit")}


def previous_run(old: dict, model: str | None) -> dict | None:
    """The last gpu.json's decode figures when it measured another model library (kept beside the new ones);
    a rerun of the same library carries the older comparison on."""
    s = old.get("summary") or {}
    if not s or s.get("model") == model:
        return old.get("previous")
    k = ((s.get("chrome") or {}).get("kernels") or {}).get("per_prompt") or {}
    return {"model": s.get("model"), "model_lib": s.get("model_lib"), "when": old.get("when"), "gpu": s.get("gpu"),
            "node_decode_tok_s": {n: b.get("decode_tok_s") for n, b in (s.get("per_prompt") or {}).items()},
            "chrome_decode_tok_s": {n: b.get("decode_tok_s") for n, b in ((s.get("chrome") or {}).get("per_prompt") or {}).items()},
            "chrome_step": {n: {kk: b.get(kk) for kk in ("step_wall_ms", "gpu_busy_ms", "gpu_span_ms")} for n, b in k.items()},
            "chrome_top_kernel": {n: (b.get("top_kernels") or [{}])[0] for n, b in k.items()}}


def prepare(args) -> dict:
    """Stage everything for the GPU machine under .gpu/p1, p2, ...; returns the manifest."""
    for d in STAGED.glob("p[0-9]*"):  # the browser's parts (prepare-chrome: c1, c2, ...) stay
        shutil.rmtree(d)
    work = Path(tempfile.mkdtemp(prefix="wlw-gpu-prep-"))
    items: list[tuple[str, Path]] = []  # (name on the device, local file), in the order they should travel
    items.append(("manifest.json", work / "manifest.json"))
    node = Path(shutil.which("node") or "")
    if args.node_binary:
        node = Path(args.node_binary)
    if not getattr(args, "no_node", False):  # --no-node: only the browser runs (chrome_run.py), device_run.py probe
        items.append(("node.xz", xz(node.resolve(), work / "node.xz")))
        items.append(("dawn.node.xz", xz(npm_ci(), work / "dawn.node.xz")))
        items.append(("engine_node.cjs.xz", xz(bundle(work / "engine_node.cjs"), work / "engine_node.cjs.xz")))
    items += [(deb.name, deb) for deb in vulkan_debs(work)]
    if getattr(args, "static", False):  # this checkout's page bundles (chrome_run.py --static STAGE)
        from webllm_widget.headless.engine import STATIC

        items += [(n, STATIC / n) for n in ("runner.js", "engine_worker.js")]
    manifest: dict = {"node_version": subprocess.run([str(node), "--version"], capture_output=True, text=True).stdout.strip(),
                      "source_commit": source_commit(), "jobs": {}}
    jobs = []
    lengths = [int(x) for x in args.prompts.split(",")]
    if args.smoke_model:
        jobs.append(("smoke", model_job([16], 32, 3, Path(args.smoke_model))))
    if not getattr(args, "no_model", False):
        jobs.append(("model", model_job(lengths, args.max_tokens, args.runs, Path(args.model) if args.model else None)))
        if getattr(args, "generate_weights", False):
            jobs[-1] = ("model", without_shards(*jobs[-1][1]))
    if getattr(args, "baseline_lib", None):
        # with --generate-weights: the model job's random shards, not the real ones
        jobs.append(("baseline", baseline_job(jobs[-1][1], Path(args.baseline_lib),
                                              weights_of="model" if getattr(args, "generate_weights", False) else None)))
    for item in getattr(args, "lib_variant", None) or []:  # NAME=FILE: another library of the model, job model-NAME
        vname, lib = item.split("=", 1)
        model = next(j for n, j in jobs if n == "model")
        jobs.append((VARIANT + vname, baseline_job(
            model, Path(lib), "-" + vname, weights_of="model" if getattr(args, "generate_weights", False) else None)))
    shapes_wanted = list(getattr(args, "shape", None) or [])
    if getattr(args, "official_lib", None) and OFFICIAL["beside"] not in shapes_wanted:
        shapes_wanted.insert(0, OFFICIAL["beside"])
    for shape in shapes_wanted:
        jobs.append((shape, shape_job(shape, lengths, args.max_tokens, args.runs)))
    for item in getattr(args, "shape_baseline_lib", None) or []:  # SHAPE=FILE: an earlier build of that shape
        shape, lib = item.split("=", 1)
        jobs.append((shape + BASELINE, baseline_job(next(j for n, j in jobs if n == shape), Path(lib),
                                                    weights_of=shape)))  # the shape's own generated weights
    for item in getattr(args, "shape_lib_variant", None) or []:  # SHAPE:NAME=FILE: another build of that shape
        head, lib = item.split("=", 1)
        shape, vname = head.split(":", 1)
        jobs.append((shape + SHAPE_VARIANT + vname, baseline_job(next(j for n, j in jobs if n == shape), Path(lib),
                                                                 SHAPE_VARIANT + vname, weights_of=shape)))
    if getattr(args, "official_lib", None):
        beside = next(j for n, j in jobs if n == OFFICIAL["beside"])
        jobs.append(("official", official_job(Path(args.official_lib), beside, work)))
    part_bytes = int(args.part_mib * 2**20)
    for name, (job, paths) in jobs:
        tar = work / f"{name}.tar"
        with tarfile.open(tar, "w") as tf:
            for sha, p in paths.items():
                tf.add(str(p), arcname=sha)
        import hashlib

        h = hashlib.sha256()
        with open(tar, "rb") as f:
            for b in iter(lambda: f.read(1 << 22), b""):
                h.update(b)
        if getattr(args, "xz_jobs", False):  # libraries and tokenizers shrink ~3x: more jobs in one transfer
            xz(tar, tar.with_suffix(".tar.xz"))
            tar.unlink()
            tar = tar.with_suffix(".tar.xz")
        # the first pieces fill what the toolchain left of part 1
        used = sum(p.stat().st_size for n, p in items if n != "manifest.json")
        pieces, off, size, i = [], 0, tar.stat().st_size, 0
        with open(tar, "rb") as f:
            while off < size:
                room = part_bytes - used % part_bytes
                n = min(room, size - off)
                piece = work / f"{name}.tar.{i:03d}"
                piece.write_bytes(f.read(n))
                items.append((piece.name, piece))
                pieces.append(piece.name)
                used += n
                off += n
                i += 1
        tar.unlink()
        manifest["jobs"][name] = {"job": job, "parts": pieces, "tar_sha256": h.hexdigest(),
                                  "model_bytes": sum(Path(p).stat().st_size for p in paths.values())}
        if tar.suffix == ".xz":
            manifest["jobs"][name]["tar_xz"] = True
        manifest["jobs"][name]["weights"] = weight_bytes(paths, job["spec"])
        if name == "baseline" or name.endswith(BASELINE) or name.startswith(VARIANT):  # weights: another job's
            other = "model" if name == "baseline" or name.startswith(VARIANT) else name[:-len(BASELINE)]
            manifest["jobs"][name].update(shares=other, weights=manifest["jobs"][other]["weights"])
        if job.get("generate"):  # shards written on the GPU machine (bench/gpu/random_weights.py)
            manifest["jobs"][name]["generate"] = job.pop("generate")
    (work / "manifest.json").write_text(json.dumps(manifest))
    # pack the items into parts of at most part_bytes each (the manifest rides in part 1)
    part, used = 1, 0
    for name, p in items:
        sz = p.stat().st_size
        if used and used + sz > part_bytes + 2**20:  # the manifest rides in part 1 beside a full piece
            part, used = part + 1, 0
        d = STAGED / f"p{part}"
        d.mkdir(parents=True, exist_ok=True)
        if work in p.parents:
            shutil.move(str(p), d / name)
        else:  # a file of the checkout (the page bundles): copied
            shutil.copyfile(p, d / name)
        used += sz
    shutil.rmtree(work, ignore_errors=True)
    for d in sorted(STAGED.iterdir()):
        print(f"{d.relative_to(ROOT)}: {sum(f.stat().st_size for f in d.iterdir()) / 2**20:.1f} MiB "
              f"({', '.join(sorted(f.name for f in d.iterdir()))})")
    return manifest


#: Debian's Chromium: what of /usr/lib/chromium a headless run needs (no validation layers, mock ICD, extensions).
CHROMIUM_DIR = Path("/usr/lib/chromium")
CHROMIUM_FILES = ["chromium", "chrome_crashpad_handler", "icudtl.dat", "chrome_100_percent.pak",
                  "chrome_200_percent.pak", "resources.pak", "snapshot_blob.bin", "v8_context_snapshot.bin", "libEGL.so",
                  "libGLESv2.so", "libvulkan.so.1", "libvk_swiftshader.so", "vk_swiftshader_icd.json",
                  "locales/en-US.pak"]
#: glibc's own libraries stay the GPU machine's (Chromium needs GLIBC_2.36 at most).
GLIBC = ("libc.so", "libm.so", "libdl.so", "libpthread.so", "librt.so", "ld-linux")


def prepare_chrome(args) -> Path:
    """Stage Debian's Chromium for the GPU machine: chrome.tar.xz = chromium/ (the browser), lib/ (every shared
    library ldd resolves for it here, glibc aside), fonts/ (one font), static/ (the page bundles runner.js and
    engine_worker.js the widget serves), cut into pieces under .gpu/c1, c2, ... (each <= --part-mib)."""
    from webllm_widget.headless.engine import STATIC

    for d in STAGED.glob("c[0-9]*"):
        shutil.rmtree(d)
    work = Path(tempfile.mkdtemp(prefix="wlw-chrome-prep-"))
    root = work / "chrome"
    for name in CHROMIUM_FILES:
        (root / "chromium" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CHROMIUM_DIR / name, root / "chromium" / name)
        shutil.copymode(CHROMIUM_DIR / name, root / "chromium" / name)
    (root / "lib").mkdir()
    ldd = subprocess.run(["ldd", str(CHROMIUM_DIR / "chromium")], capture_output=True, text=True, check=True).stdout
    libs = [l.split("=>")[1].split("(")[0].strip() for l in ldd.splitlines() if "=>" in l]
    for lib in libs:
        if lib and not any(g in Path(lib).name for g in GLIBC):
            shutil.copyfile(Path(lib).resolve(), root / "lib" / Path(lib).name)
    (root / "fonts").mkdir()
    shutil.copyfile("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", root / "fonts" / "DejaVuSans.ttf")
    (root / "static").mkdir()
    for name in ("runner.js", "engine_worker.js"):
        shutil.copyfile(STATIC / name, root / "static" / name)
    tar = work / "chrome.tar.xz"
    print(f"   packing {sum(f.stat().st_size for f in root.rglob('*') if f.is_file()) / 2**20:.0f} MiB (xz)", file=sys.stderr)
    subprocess.run(f"tar -C {root} -cf - . | xz -T2 -6 > {tar}", shell=True, check=True)
    part_bytes = int(args.part_mib * 2**20)
    with open(tar, "rb") as f:
        i = 0
        while chunk := f.read(part_bytes):
            d = STAGED / f"c{i + 1}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"chrome.tar.xz.{i:03d}").write_bytes(chunk)
            i += 1
    shutil.rmtree(work, ignore_errors=True)
    for d in sorted(STAGED.glob("c[0-9]*")):
        print(f"{d.relative_to(ROOT)}: {sum(f.stat().st_size for f in d.iterdir()) / 2**20:.1f} MiB")
    return STAGED


def weight_bytes(paths: dict, spec: dict) -> dict:
    """Bytes a decode step must read: every parameter record once (tensor-cache.json), plus the KV cache per
    position of context (layers x 2 x KV heads x head dim x element size, from mlc-chat-config.json)."""
    by_name = {f["name"]: paths.get(f["sha256"]) for f in spec.get("files", [])}
    out: dict = {}
    tc = by_name.get("tensor-cache.json") or by_name.get("ndarray-cache.json")  # web-llm 0.2.85's name, 0.2.79's
    if tc:
        recs = json.loads(Path(tc).read_text())["records"]
        out["params_bytes"] = sum(r["nbytes"] for r in recs)
    cfg_path = by_name.get("mlc-chat-config.json")
    if cfg_path:
        cfg = json.loads(Path(cfg_path).read_text())
        mc = cfg.get("model_config", {})
        layers, kvh = mc.get("num_hidden_layers"), mc.get("num_key_value_heads")
        hd = mc.get("head_dim") or (mc.get("hidden_size", 0) // max(1, mc.get("num_attention_heads", 1)))
        q = str(cfg.get("quantization", ""))
        elem = 2 if q.endswith("f16_1") or q == "q0f16" else 4  # the KV cache is kept in the compute dtype
        if layers and kvh and hd:
            out["kv_bytes_per_position"] = layers * 2 * kvh * hd * elem
    return out


def datasheet(name: str) -> int | None:
    for k, v in DATASHEET_GBPS.items():
        if k.lower() in name.lower():
            return v
    return None


def collect(raw_path: Path, out_dir: Path | None, chrome_paths: list[Path] | None = None,
            chrome_baseline: Path | None = None, chrome_variants: list[Path] | None = None) -> Path:
    """gpu_raw.json from the GPU machine -> gpu.json: speeds, the GPU, the bandwidth bound beside them; with
    chrome_paths (chrome_raw.json files of bench/gpu/chrome_run.py, the same machine) the browser's run beside Node's:
    the first in full, later ones as repeats (their per-prompt medians)."""
    raw = json.loads(raw_path.read_text())
    gpu_name = raw.get("torch", {}).get("name") or raw.get("nvidia_smi", {}).get("name") or "unknown"
    copy = raw.get("torch", {}).get("copy", {})
    measured = copy.get("GBps_median")
    sheet = datasheet(gpu_name)
    res: dict = {"gpu": {"name": gpu_name, "nvidia_smi": raw.get("nvidia_smi"), "torch": raw.get("torch"),
                         "datasheet_GBps": sheet, "vulkan": raw.get("vulkan")},
                 "how": ("Node " + str(raw.get("manifest", {}).get("node_version")) + " + Dawn for Node (npm webgpu "
                         "0.6.2, Vulkan) running the widget's engine (js/src/engine, web-llm 0.2.85, tvmjs 0.27) "
                         "in one thread; greedy, ignore_eos, KV cache reset before each run, 1 warm-up run"),
                 "runs": {}}
    for name, job in raw.get("jobs", {}).items():
        man = raw.get("manifest", {}).get("jobs", {}).get(name, {})
        r = job.get("result") or {}
        entry: dict = {"model": man.get("job", {}).get("spec", {}).get("id"),
                       "rc": job.get("rc"), "error": job.get("error") or job.get("skipped")}
        if job.get("rc") not in (0, None):
            entry["stderr_tail"] = job.get("stderr_tail")
        entry.update({k: r.get(k) for k in ("adapter_info", "load", "prompts") if k in r})
        w = man.get("weights", {})
        entry["weights"] = w
        if w.get("params_bytes") and measured:
            per_len = {}
            for n, p in (r.get("prompts") or {}).items():
                ctx = (p.get("prompt_tokens") or 0) + (p.get("completion_tokens") or 0) / 2  # mean context while decoding
                bpt = w["params_bytes"] + w.get("kv_bytes_per_position", 0) * ctx
                bound = measured * 1e9 / bpt
                dec = (p.get("decode_tok_s") or {}).get("median")
                per_len[n] = {"bytes_per_token": round(bpt), "bound_tok_s": round(bound, 1),
                              "bound_tok_s_datasheet": round(sheet * 1e9 / bpt, 1) if sheet else None,
                              "decode_tok_s": dec, "fraction_of_bound": (dec / bound) if dec else None,
                              "achieved_GBps": (dec * bpt / 1e9) if dec else None}
            entry["bound"] = per_len
        res["runs"][name] = entry
    prof = raw.get("profile")
    old = (out_dir or ROOT / "bench" / "results") / "gpu.json"
    if not prof and old.exists() and json.loads(old.read_text()).get("profile"):
        # a run without --profile keeps the last profiled run's findings, marked with that run's date
        o = json.loads(old.read_text())
        res["profile"] = dict(o["profile"], from_run=o["profile"].get("from_run") or o.get("when"))
    if prof:
        res["profile"] = {"prompts": (prof.get("result") or {}).get("prompts"), "rc": prof.get("rc")}
        files = sorted(raw_path.parent.glob("prof/*.cpuprofile")) + sorted(raw_path.parent.glob("*.cpuprofile"))
        if files:
            res["profile"]["host_cpu"] = profile_summary(files[0])
        util = next(iter(sorted(raw_path.parent.glob("**/gpu_util.csv"))), None)
        if util:
            vals = [int(l.split(",")[1].strip().split()[0]) for l in util.read_text().splitlines() if l.count(",") >= 3
                    and l.split(",")[1].strip().split()[0].isdigit()]
            res["profile"]["gpu_util_pct"] = {"samples": len(vals), "mean": sum(vals) / len(vals) if vals else None,
                                              "max": max(vals) if vals else None}
    model = res["runs"].get("model") or {}
    if not model.get("weights"):  # the Node run was skipped (device_run.py --jobs ''): the manifest has them
        mj = raw.get("manifest", {}).get("jobs", {}).get("model") or {}
        model["weights"] = mj.get("weights") or {}
        model.setdefault("model", (mj.get("job") or {}).get("spec", {}).get("id"))
    baseline_sha = None
    if chrome_baseline:
        bspec = (raw.get("manifest", {}).get("jobs", {}).get("baseline") or {}).get("job", {}).get("spec") or {}
        baseline_sha = library_sha(bspec)
    res["summary"] = {
        "gpu": gpu_name, "copy_GBps": measured, "datasheet_GBps": sheet, "model": model.get("model"),
        "model_lib": model_lib(raw.get("manifest") or {}),
        "schedule": (model.get("load") or {}).get("schedule"),
        "bytes_per_token_weights": (model.get("weights") or {}).get("params_bytes"),
        "per_prompt": {n: {"decode_tok_s": b["decode_tok_s"], "bound_tok_s": b["bound_tok_s"],
                           "fraction_of_bound": b["fraction_of_bound"],
                           "prefill_tok_s": ((model.get("prompts") or {}).get(n, {}).get("prefill_tok_s") or {}).get("median"),
                           # this process's CPU seconds per wall second over the run: ~1 or more = host-bound
                           "host_cpu_per_wall": _ratio((model.get("prompts") or {}).get(n, {})),
                           **_dispatch((model.get("prompts") or {}).get(n, {}))}
                       for n, b in (model.get("bound") or {}).items()},
    }
    if chrome_paths:
        res["chrome"] = chrome_entry(json.loads(chrome_paths[0].read_text()), measured, sheet, model.get("weights") or {})
        res["chrome"]["repeats"] = [
            {n: {k: b.get(k) for k in ("decode_tok_s", "prefill_tok_s")} for n, b in
             chrome_entry(json.loads(p.read_text()), measured, sheet, model.get("weights") or {})["per_prompt"].items()}
            for p in chrome_paths[1:]]
        # runs with extra Chromium flags (Dawn toggles), each beside the plain run of the same call (same machine)
        res["chrome"]["variants"] = []
        for p in chrome_paths:
            c = json.loads(p.read_text())
            base = {n: (q.get("decode_tok_s") or {}).get("median") for n, q in ((c.get("result") or {}).get("prompts") or {}).items()}
            for name, v in (c.get("variants") or {}).items():
                dec = {n: (q.get("decode_tok_s") or {}).get("median") for n, q in (v.get("prompts") or {}).items()}
                res["chrome"]["variants"].append({
                    "name": name, "when": c.get("when"), "flags": v.get("flags"), "error": v.get("error"),
                    "decode_tok_s": dec, "plain_decode_tok_s_same_call": base,
                    "speedup": {n: dec[n] / base[n] for n in dec if dec.get(n) and base.get(n)}})
        # per-kernel GPU time (chrome_run.py --kernels): the first chrome_raw.json that has it
        kraw = next((c for c in (json.loads(p.read_text()) for p in chrome_paths) if c.get("kernels")), None)
        if kraw:
            k = kraw["kernels"]  # the first run's step rows: the first few (prefill + decode) show the pattern
            res["chrome"]["kernels"] = dict(k, when=kraw.get("when"), per_prompt={
                n: dict(q, first_run_steps=(q.get("first_run_steps") or [])[:4]) for n, q in (k.get("per_prompt") or {}).items()})
        node_pp = res["summary"]["per_prompt"]
        res["summary"]["chrome"] = {
            "chromium": res["chrome"].get("chromium"), "flag_set": res["chrome"].get("flag_set"),
            "adapter": res["chrome"].get("adapter_info"), "error": res["chrome"].get("error"),
            "per_prompt": {n: dict(b, chrome_over_node_decode=(b["decode_tok_s"] / node_pp[n]["decode_tok_s"])
                                   if b.get("decode_tok_s") and (node_pp.get(n) or {}).get("decode_tok_s") else None)
                           for n, b in (res["chrome"].get("per_prompt") or {}).items()}}
        if kraw:
            res["summary"]["chrome"]["kernels"] = kernel_step_summary(res["chrome"]["kernels"])
        # batched dispatch (the engine's) against tvmjs's own, same call: chrome_run.py --upstream-dispatch
        ab = next((v for v in res["chrome"]["variants"] if v["name"] == "upstream-dispatch"), None)
        if ab:
            res["summary"]["chrome"]["dispatch"] = {
                "load_dispatch": ((res["chrome"].get("load") or {}).get("dispatch")),
                "per_prompt": {n: {"batched_decode_tok_s": ab["plain_decode_tok_s_same_call"].get(n),
                                   "upstream_decode_tok_s": d,
                                   "batched_over_upstream": (ab["plain_decode_tok_s_same_call"].get(n) or 0) / d if d else None}
                               for n, d in ab["decode_tok_s"].items()}}
    if chrome_baseline:
        c = json.loads(chrome_baseline.read_text())
        e = chrome_entry(c, measured, sheet, model.get("weights") or {})
        new = ((res.get("chrome") or {}).get("per_prompt")) or {}
        res["chrome_baseline"] = {"model": (c.get("job") or {}).get("model"), "when": c.get("when"),
                                  "library_sha256": baseline_sha, "error": e.get("error"),
                                  "decode_loop": next((b.get("decode_loop") for b in e["per_prompt"].values()), None),
                                  "per_prompt": {n: {k: b.get(k) for k in ("decode_tok_s", "prefill_tok_s")}
                                                 for n, b in e["per_prompt"].items()}}
        res["summary"]["chrome_vs_baseline_library"] = {
            n: {"prefill_new_over_baseline": ((new.get(n) or {}).get("prefill_tok_s") or 0) / b["prefill_tok_s"]
                if b.get("prefill_tok_s") else None,
                "decode_new_over_baseline": ((new.get(n) or {}).get("decode_tok_s") or 0) / b["decode_tok_s"]
                if b.get("decode_tok_s") else None}
            for n, b in e["per_prompt"].items()}
    for vp in chrome_variants or []:  # other libraries of the model, same call (prepare --lib-variant)
        vjob = job_of(vp)
        c = json.loads(vp.read_text())
        e = chrome_entry(c, measured, sheet, model.get("weights") or {})
        vspec = (raw.get("manifest", {}).get("jobs", {}).get(vjob) or {}).get("job", {}).get("spec") or {}
        new = ((res.get("chrome") or {}).get("per_prompt")) or {}
        res.setdefault("chrome_lib_variants", {})[vjob[len(VARIANT):]] = {
            "model": (c.get("job") or {}).get("model"), "when": c.get("when"), "error": e.get("error"),
            "library_sha256": library_sha(vspec),
            "per_prompt": {n: {k: b.get(k) for k in ("decode_tok_s", "prefill_tok_s", "decode_loop")} for n, b in e["per_prompt"].items()},
            "decode_variant_over_model": {n: b["decode_tok_s"] / new[n]["decode_tok_s"] for n, b in e["per_prompt"].items()
                                          if b.get("decode_tok_s") and (new.get(n) or {}).get("decode_tok_s")}}
    if old.exists():
        o = json.loads(old.read_text())
        prev = previous_run(o, res["summary"]["model"])
        if prev:
            res["previous"] = prev
        for k in SHAPE_KEYS:  # written by collect_shapes, from its own runs: kept until it runs again
            if k in o:
                res[k] = o[k]
            if k in (o.get("summary") or {}):
                res["summary"][k] = o["summary"][k]
    path = write_result("gpu", res, out_dir)
    for n, b in (((res.get("summary") or {}).get("chrome") or {}).get("kernels") or {}).get("per_prompt", {}).items():
        print(f"chrome prompt {n} per decode step: wall {b['step_wall_ms'] or 0:.3f} ms, GPU busy "
              f"{b['gpu_busy_ms'] or 0:.3f} ms (span {b['gpu_span_ms'] or 0:.3f}), encode {b['encode_ms'] or 0:.3f} ms; "
              + ", ".join(f"{t['kernel']} {t['ms_per_step']:.3f} ms" for t in b["top_kernels"][:3]))
    for n, b in ((res.get("summary") or {}).get("chrome") or {}).get("per_prompt", {}).items():
        print(f"chrome prompt {n}: decode {b['decode_tok_s'] or 0:.1f} tok/s, prefill {b['prefill_tok_s'] or 0:.0f} tok/s, "
              f"{b.get('us_per_dispatch')} us/dispatch, x{b.get('chrome_over_node_decode') or 0:.2f} of Node's decode")
    for name, e in res["runs"].items():
        for n, b in (e.get("bound") or {}).items():
            print(f"{name} prompt {n}: decode {b['decode_tok_s'] or 0:.1f} tok/s, bound {b['bound_tok_s']:.0f} tok/s "
                  f"({(b['fraction_of_bound'] or 0) * 100:.2f}%) on {gpu_name}")
    print(f"-> {path}")
    return path


#: gpu.json keys written by collect_shapes (the shapes and the official comparison); collect carries them on.
SHAPE_KEYS = ("shapes", "official")


def _med(xs: list) -> float | None:
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def collect_shapes(raw_path: Path, chrome: dict[str, Path], out_dir: Path | None = None) -> Path:
    """gpu_raw.json (device_run.py probe: the GPU, its copy bandwidth, the manifest) and one chrome_raw.json per
    staged job of the same call -> gpu.json's ``shapes`` (per real model shape: decode and prefill tok/s, the bound
    from the measured copy bandwidth and ``share_of_bound``) and ``official`` (MLC's prebuilt library run by MLC's
    web-llm beside the project's build of the same shape: per prompt ``ratio`` = project decode / official decode,
    and the same for prefill). The rest of gpu.json (the built-in model's runs) is kept as it is."""
    raw = json.loads(raw_path.read_text())
    gpu_name = raw.get("torch", {}).get("name") or raw.get("nvidia_smi", {}).get("name") or "unknown"
    measured = (raw.get("torch", {}).get("copy") or {}).get("GBps_median")
    sheet = datasheet(gpu_name)
    jobs = (raw.get("manifest") or {}).get("jobs") or {}
    old_path = (out_dir or ROOT / "bench" / "results") / "gpu.json"
    res = json.loads(old_path.read_text()) if old_path.exists() else {"benchmark": "gpu"}
    res.setdefault("summary", {})
    entries = {}
    for name, path in chrome.items():
        c = json.loads(Path(path).read_text())
        man = jobs.get(name) or {}
        e = chrome_entry(c, measured, sheet, man.get("weights") or {})
        for b in e["per_prompt"].values():
            b["share_of_bound"] = b.get("fraction_of_bound")
        entries[name] = (c, man, e)
    common = {"when": raw.get("when"), "gpu": gpu_name, "nvidia_smi": raw.get("nvidia_smi"), "copy_GBps": measured,
              "datasheet_GBps": sheet}
    shapes = {}
    for name, (c, man, e) in entries.items():
        if name == "official" or name.endswith(BASELINE) or SHAPE_VARIANT in name:
            continue
        job = man.get("job") or {}
        shapes[name] = {**common, "model": (job.get("spec") or {}).get("id"), "hf_config": (job.get("shape") or {}).get("hf_config"),
                        "library_sha256": library_sha(job.get("spec") or {}),
                        "source_commit": (raw.get("manifest") or {}).get("source_commit"),
                        "weights": man.get("weights"), "max_tokens": job.get("max_tokens"), "runs": job.get("runs"),
                        "chromium": e.get("chromium"), "adapter": e.get("adapter_info"), "error": e.get("error"),
                        "load": e.get("load"), "per_prompt": e["per_prompt"],
                        "how": "random weights written on the GPU machine in the staged layout (bench/gpu/random_weights.py); "
                               + e["how"]}
        if e.get("error"):
            shapes[name]["stderr_tail"] = e.get("stderr_tail")
        if c.get("kernels"):  # chrome_run.py --kernels: a compute pass per kernel, timed
            shapes[name]["kernels"] = kernel_step_summary(c["kernels"], top=14)
        if name + BASELINE in entries:  # an earlier library of the shape, same weights, same call
            bc, bman, be = entries[name + BASELINE]
            bspec = (bman.get("job") or {}).get("spec") or {}
            per = e["per_prompt"]
            shapes[name]["before_same_call"] = {
                "model": bspec.get("id"), "error": be.get("error"),
                "library_sha256": library_sha(bspec),
                "what": "an earlier library of the same shape (prepare --shape-baseline-lib), same weights, same call",
                **{k: {n: b.get(k) for n, b in be["per_prompt"].items()}
                   for k in ("decode_tok_s", "prefill_tok_s", "share_of_bound", "decode_loop")},
                "decode_new_over_before": {n: (per.get(n) or {}).get("decode_tok_s", 0) / b["decode_tok_s"]
                                           for n, b in be["per_prompt"].items()
                                           if b.get("decode_tok_s") and (per.get(n) or {}).get("decode_tok_s")}}
            if bc.get("kernels"):
                shapes[name]["before_same_call"]["kernels"] = kernel_step_summary(bc["kernels"], top=14)
        for vjob, (vc, vman, ve) in entries.items():  # other builds of the shape, same weights, same call
            if not vjob.startswith(name + SHAPE_VARIANT):
                continue
            per = e["per_prompt"]
            v = {"model": ((vman.get("job") or {}).get("spec") or {}).get("id"), "error": ve.get("error"),
                 "library_sha256": library_sha((vman.get("job") or {}).get("spec") or {}),
                 **{k: {n: b.get(k) for n, b in ve["per_prompt"].items()}
                    for k in ("decode_tok_s", "prefill_tok_s", "share_of_bound", "decode_loop")},
                 "decode_variant_over_shape": {n: b["decode_tok_s"] / per[n]["decode_tok_s"]
                                               for n, b in ve["per_prompt"].items()
                                               if b.get("decode_tok_s") and (per.get(n) or {}).get("decode_tok_s")}}
            if vc.get("kernels"):
                v["kernels"] = kernel_step_summary(vc["kernels"], top=14)
            shapes[name].setdefault("variants_same_call", {})[vjob[len(name + SHAPE_VARIANT):]] = v
        old = (res.get("shapes") or {}).get(name)
        if old and old.get("when") != common["when"]:  # the shape's last record, in short
            shapes[name]["previous"] = {"when": old.get("when"), "gpu": old.get("gpu"), "source_commit": old.get("source_commit"),
                                        "library_sha256": old.get("library_sha256"),
                                        "decode_tok_s": {n: b.get("decode_tok_s") for n, b in (old.get("per_prompt") or {}).items()},
                                        "before_same_call": {k: v for k, v in (old.get("before_same_call") or {}).items()
                                                             if k in ("source_commit", "decode_tok_s", "what")} or None}
    if shapes:
        res["shapes"] = {**(res.get("shapes") or {}), **shapes}
        res["summary"]["shapes"] = {n: {"model": v["model"], "gpu": gpu_name, "when": v["when"], "per_prompt": {
            k: {kk: b.get(kk) for kk in ("decode_tok_s", "prefill_tok_s", "bound_tok_s", "share_of_bound")}
            for k, b in v["per_prompt"].items()}} for n, v in shapes.items()}
    if "official" in entries:
        oc, oman, oe = entries["official"]
        ojob = oman.get("job") or {}
        info = ojob.get("official") or {}
        beside = info.get("beside") or OFFICIAL["beside"]
        pc, pman, pe = entries.get(beside, (None, {}, {"per_prompt": {}}))
        per = {}
        for n, ob in oe["per_prompt"].items():
            pb = pe["per_prompt"].get(n) or {}
            op = ((oc.get("result") or {}).get("prompts") or {}).get(n) or {}
            pp = (((pc or {}).get("result") or {}).get("prompts") or {}).get(n) or {}
            ratio = lambda a, b: a / b if a and b else None  # noqa: E731
            per[n] = {"prompt_tokens": {"project": pp.get("prompt_tokens"), "official": op.get("prompt_tokens")},
                      "completion_tokens": {"project": pp.get("completion_tokens"), "official": op.get("completion_tokens")},
                      "project_decode_tok_s": pb.get("decode_tok_s"), "official_decode_tok_s": ob.get("decode_tok_s"),
                      "ratio": ratio(pb.get("decode_tok_s"), ob.get("decode_tok_s")),
                      "project_prefill_tok_s": pb.get("prefill_tok_s"), "official_prefill_tok_s": ob.get("prefill_tok_s"),
                      "prefill_ratio": ratio(pb.get("prefill_tok_s"), ob.get("prefill_tok_s")),
                      "project_dispatches_per_token": pb.get("dispatches_per_token"),
                      "official_dispatches_per_token": ob.get("dispatches_per_token"),
                      "official_share_of_bound": ob.get("share_of_bound"), "project_share_of_bound": pb.get("share_of_bound"),
                      # queue submits per generated token and Chromium's CPU seconds per wall second (host cost)
                      "submits_per_token": {k: round(q["submits"] / q["completion_tokens"], 1)
                                            if q.get("submits") and q.get("completion_tokens") else None
                                            for k, q in (("project", pp), ("official", op))},
                      "host_cpu_per_wall": {"project": pb.get("host_cpu_per_wall"), "official": ob.get("host_cpu_per_wall")},
                      "decode_runs": {"project": (pp.get("decode_tok_s") or {}).get("runs"),
                                      "official": (op.get("decode_tok_s") or {}).get("runs")},
                      # greedy text of the last run; None when either is empty (ids past the tokenizer's pieces
                      # decode to nothing, which says nothing about the two computing the same thing)
                      "same_text": (pp.get("text_head") == op.get("text_head"))
                      if pp.get("text_head") and op.get("text_head") else None,
                      "text_head": {"project": (pp.get("text_head") or "")[:80], "official": (op.get("text_head") or "")[:80]}}
        res["official"] = {**common, "library": {k: info.get(k) for k in ("repo", "path", "library_sha256", "library_bytes",
                                                                         "metadata")},
                           "web_llm": info.get("web_llm"), "project": {"job": beside, "model": (pman.get("job") or {}).get("spec", {}).get("id"),
                                                                        "load": pe.get("load")},
                           "same_weight_bytes": info.get("same_layout_as_project"),
                           "chromium": oe.get("chromium"), "adapter": oe.get("adapter_info"),
                           "error": oe.get("error") or pe.get("error"), "load": oe.get("load"),
                           "ratio_median": _med([b["ratio"] for b in per.values()]),
                           "prefill_ratio_median": _med([b["prefill_ratio"] for b in per.values()]),
                           "per_prompt": per,
                           "how": ("same Chromium, same GPU, same call: MLC's prebuilt library run by npm @mlc-ai/web-llm "
                                   f"{info.get('web_llm')} in a Worker (bench/official), the project's `build --hf` of the same "
                                   "shape in the widget's engine; the same tokenizer, chat template and prompts; greedy, "
                                   "ignore_eos, fixed output length, KV cache reset before each run, 1 warm-up run; decode and "
                                   "prefill tok/s as each web-llm reports them (median over runs). Weights: random, written on "
                                   "the GPU machine" + ("; the same shard files for both (same records, shapes and order)"
                                                         if info.get("same_layout_as_project") else ""))}
        if oe.get("error"):
            res["official"]["stderr_tail"] = oe.get("stderr_tail")
        res["summary"]["official"] = {"gpu": gpu_name, "when": raw.get("when"), "ratio_median": res["official"]["ratio_median"],
                                      "prefill_ratio_median": res["official"]["prefill_ratio_median"],
                                      "per_prompt": {n: {k: b[k] for k in ("project_decode_tok_s", "official_decode_tok_s", "ratio",
                                                                            "project_prefill_tok_s", "official_prefill_tok_s",
                                                                            "prefill_ratio")} for n, b in per.items()}}
    old_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = old_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=1, default=str))
    os.replace(tmp, old_path)
    for n, v in shapes.items():
        for k, b in v["per_prompt"].items():
            print(f"{n} prompt {k}: decode {b.get('decode_tok_s') or 0:.1f} tok/s, prefill {b.get('prefill_tok_s') or 0:.0f} tok/s, "
                  f"{(b.get('share_of_bound') or 0) * 100:.1f}% of the bound ({b.get('bound_tok_s')} tok/s) on {gpu_name}")
    for k, b in ((res.get("official") or {}).get("per_prompt") or {}).items() if "official" in entries else []:
        print(f"official prompt {k}: decode project {b['project_decode_tok_s'] or 0:.1f} / official "
              f"{b['official_decode_tok_s'] or 0:.1f} = x{b['ratio'] or 0:.2f}; prefill x{b['prefill_ratio'] or 0:.2f}")
    print(f"-> {old_path}")
    return old_path


def chrome_entry(c: dict, measured: float | None, sheet: int | None, weights: dict) -> dict:
    """The browser's run (chrome_raw.json): adapter, flags, load, per-prompt speeds, host CPU by Chromium process
    type per wall second, dispatches per token and wall us per dispatch, and the fraction of the bandwidth bound."""
    r = c.get("result") or {}
    out: dict = {"chromium": c.get("chromium"), "flag_set": c.get("flag_set"), "flags": (c.get("job") or {}).get("flags"),
                 "probes": {k: {kk: vv for kk, vv in v.items() if kk != "features"} for k, v in (c.get("probes") or {}).items()},
                 "adapter_info": r.get("adapter_info"), "features": r.get("features"), "load": r.get("load"),
                 "error": r.get("error"), "ldd_missing": c.get("ldd_missing"), "job": c.get("job"),
                 "prompts": r.get("prompts"),
                 "how": ("Debian's Chromium (headless, carried with its shared libraries) on the GPU through Vulkan; "
                         "the widget's runner page (runner.js + engine_worker.js: web-llm in a Worker) served from "
                         "loopback; greedy, ignore_eos, KV cache reset before each run, 1 warm-up run")}
    if r.get("error"):
        out["stderr_tail"] = (r.get("stderr_tail") or "")[-2000:]
    per: dict = {}
    for n, p in (r.get("prompts") or {}).items():
        dec = (p.get("decode_tok_s") or {}).get("median")
        wall = (p.get("wall_s") or {}).get("median")
        row = {"decode_tok_s": dec, "prefill_tok_s": (p.get("prefill_tok_s") or {}).get("median"),
               "decode_loop": p.get("decode_loop"),
               "host_cpu_per_wall": _ratio(p),
               "cpu_per_wall_by_type": {t: round(v["median"] / wall, 2) for t, v in (p.get("cpu_s_by_type") or {}).items()
                                        if wall and v.get("median") is not None},
               **_dispatch(p)}
        if weights.get("params_bytes") and measured and dec:
            ctx = (p.get("prompt_tokens") or 0) + (p.get("completion_tokens") or 0) / 2
            bpt = weights["params_bytes"] + weights.get("kv_bytes_per_position", 0) * ctx
            row.update(bound_tok_s=round(measured * 1e9 / bpt, 1), fraction_of_bound=dec / (measured * 1e9 / bpt))
        per[n] = row
    out["per_prompt"] = per
    return out


def kernel_step_summary(k: dict, top: int = 5) -> dict:
    """chrome_run.py --kernels -> per prompt: a decode step's wall, the Worker's encode time and the GPU's busy
    time (sum of timed compute passes) and span, in ms (means over the timed steps), and the top kernels."""
    out: dict = {}
    for n, q in (k.get("per_prompt") or {}).items():
        d = q.get("decode") or {}
        mean = lambda key: (d.get(key) or {}).get("mean")  # noqa: E731
        out[n] = {"step_wall_ms": mean("wall_ms"), "encode_ms": mean("encode_ms"), "gpu_busy_ms": mean("gpu_busy_ms"),
                  "gpu_span_ms": mean("gpu_span_ms"), "dispatches_per_step": mean("dispatches"),
                  # the timed run's own decode speed (the extra resolve + readback per submit slows it a little)
                  "timed_decode_tok_s": (((k.get("prompts") or {}).get(n) or {}).get("decode_tok_s") or {}).get("median"),
                  "gpu_busy_share_of_wall": q.get("gpu_busy_share_of_wall"), "decode_steps": q.get("decode_steps"),
                  "top_kernels": [{kk: t.get(kk) for kk in ("kernel", "ms_per_step", "calls_per_step", "us_per_call",
                                                            "share_of_gpu")} for t in (q.get("top_kernels") or [])[:top]]}
    return {"error": k.get("error"), "timestamps": k.get("timestamps"), "when": k.get("when"), "per_prompt": out}


def profile_summary(path: Path, top: int = 15) -> dict:
    """Self time by function from a Node .cpuprofile: the idle share says whether the host waits (on the GPU,
    or on Dawn's event polling) or computes; the top entries say where its own time goes."""
    prof = json.loads(path.read_text())
    nodes = {n["id"]: n for n in prof["nodes"]}
    self_us: dict = {}
    for nid, dt in zip(prof["samples"], prof["timeDeltas"]):
        cf = nodes[nid]["callFrame"]
        key = f"{cf['functionName'] or '(anonymous)'} {Path(cf['url']).name}:{cf['lineNumber']}".strip()
        self_us[key] = self_us.get(key, 0) + max(dt, 0)
    total = sum(self_us.values()) or 1
    rows = sorted(self_us.items(), key=lambda kv: -kv[1])
    return {"total_s": total / 1e6, "idle_share": self_us.get("(idle) :-1", 0) / total,
            "top": [{"fn": k, "share": round(v / total, 4), "s": round(v / 1e6, 3)} for k, v in rows[:top]]}


def _ratio(p: dict) -> float | None:
    c, w = (p.get("cpu_s") or {}).get("median"), (p.get("wall_s") or {}).get("median")
    return round(c / w, 2) if c and w else None


def _dispatch(p: dict) -> dict:
    """Compute dispatches per generated token (the run's count, prefill included, over its tokens) and the decode
    time per token shared among them: the host's cost per dispatch when the host is the limit."""
    d, n, dec = p.get("dispatches"), p.get("completion_tokens"), (p.get("decode_tok_s") or {}).get("median")
    if not (d and n and dec):
        return {}
    per_tok = d / n
    return {"dispatches_per_token": round(per_tok, 1), "us_per_dispatch": round(1e6 / dec / per_tok, 1)}


def job_of(path: Path) -> str:
    """chrome_raw_<job>.json -> job (the name chrome_run.py --raw-name gives each job's result)."""
    stem = Path(path).stem
    if not stem.startswith("chrome_raw_"):
        raise SystemExit(f"{path}: expected a file named chrome_raw_<job>.json")
    return stem[len("chrome_raw_"):]


def has_gpu() -> bool:
    return Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi") is not None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("prepare", "run"):
        p = sub.add_parser(name)
        p.add_argument("--prompts", default="32,128,512")
        p.add_argument("--max-tokens", type=int, default=128)
        p.add_argument("--runs", type=int, default=5)
        p.add_argument("--model", help="a web-llm model folder (default: the built-in SmolLM2 as Chat sends it)")
        p.add_argument("--smoke-model", help="a tiny model folder run first, to show the path works")
        p.add_argument("--node-binary", help="the node executable to ship (default: the one on PATH)")
        p.add_argument("--part-mib", type=float, default=60.0, help="largest staged part (one transfer)")
        p.add_argument("--out", type=Path, default=None)
        if name == "prepare":
            p.add_argument("--bundle-only", action="store_true", help="only rebuild the staged engine bundle")
            p.add_argument("--no-node", action="store_true",
                           help="stage no Node + Dawn (the browser bench alone; device_run.py probe records the GPU)")
            p.add_argument("--baseline-lib", help="another model.wasm for the same model (an earlier build): staged "
                                                  "as job 'baseline' (chrome_run.py --job baseline) beside 'model'")
            p.add_argument("--no-model", action="store_true", help="stage no 'model' job (the built-in model)")
            p.add_argument("--xz-jobs", action="store_true",
                           help="compress each job's files (xz) before they are cut into parts")
            p.add_argument("--generate-weights", action="store_true",
                           help="stage the model job (and --baseline-lib) without parameter shards: random ones of "
                                "the same layout are written on the GPU machine (one transfer for the whole run)")
            p.add_argument("--static", action="store_true",
                           help="stage this checkout's runner.js and engine_worker.js (chrome_run.py --static STAGE "
                                "then runs them instead of those packed with Chromium)")
            p.add_argument("--shape", action="append", choices=sorted(SHAPES),
                           help="a real model shape with random weights (job named so; shards made on the GPU machine)")
            p.add_argument("--lib-variant", action="append", metavar="NAME=FILE",
                           help="another model.wasm of the model (a variant build): staged as job model-NAME with the "
                                "model's weights, collected by collect --chrome-lib-variant beside the model's run")
            p.add_argument("--shape-baseline-lib", action="append", metavar="SHAPE=FILE",
                           help="an earlier model.wasm of a --shape (e.g. main's build): staged as job SHAPE-baseline "
                                "with the same generated weights, collected as the shape's before_same_call")
            p.add_argument("--shape-lib-variant", action="append", metavar="SHAPE:NAME=FILE",
                           help="another model.wasm of a --shape (a variant build, e.g. bench/lane_gemv_lib.py's): "
                                "staged as job SHAPE--NAME with the shape's generated weights, collected into the "
                                "shape's variants_same_call")
            p.add_argument("--official-lib", help=f"MLC's prebuilt {OFFICIAL['path'].rsplit('/', 1)[1]} (from "
                                                  f"{OFFICIAL['repo']}): job 'official', run by web-llm "
                                                  f"{OFFICIAL['web_llm']} beside job '{OFFICIAL['beside']}'")
        if name == "run":
            p.add_argument("--if-gpu", action="store_true", help="skip (exit 0) when this machine has no NVIDIA GPU")
    pc = sub.add_parser("prepare-chrome", help="stage Debian's Chromium + the page bundles under .gpu/c1, c2, ...")
    pc.add_argument("--part-mib", type=float, default=60.0)
    c = sub.add_parser("collect")
    c.add_argument("raw", type=Path)
    c.add_argument("--chrome", type=Path, nargs="*", default=None,
                   help="chrome_raw.json files (bench/gpu/chrome_run.py, same machine) to put beside; first in full")
    c.add_argument("--chrome-lib-variant", type=Path, nargs="*", default=None,
                   help="chrome_raw_model-NAME.json of staged --lib-variant jobs (other libraries, same call)")
    c.add_argument("--chrome-baseline", type=Path, default=None,
                   help="chrome_raw.json of the staged 'baseline' job (another library, same call) to put beside")
    c.add_argument("--out", type=Path, default=None)
    cs = sub.add_parser("collect-shapes", help="gpu_raw.json (probe) + chrome_raw_<job>.json of the shape and official "
                                               "jobs -> gpu.json 'shapes' and 'official' (the rest kept)")
    cs.add_argument("raw", type=Path)
    cs.add_argument("chrome", type=Path, nargs="+", help="chrome_raw_<job>.json files (job name from the file name)")
    cs.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.cmd == "prepare" and args.bundle_only:
        # a new engine bundle into the staged part 1, model parts untouched (the same model build travels again)
        dst = STAGED / "p1" / "engine_node.cjs.xz"
        xz(bundle(dst.with_suffix("")), dst)
        dst.with_suffix("").unlink()
        print(f"{dst.relative_to(ROOT)}: {dst.stat().st_size / 2**20:.1f} MiB")
    elif args.cmd == "prepare":
        prepare(args)
    elif args.cmd == "prepare-chrome":
        prepare_chrome(args)
    elif args.cmd == "collect-shapes":
        collect_shapes(args.raw, {job_of(p): p for p in args.chrome}, args.out)
    elif args.cmd == "collect":
        collect(args.raw, args.out, args.chrome, args.chrome_baseline, args.chrome_lib_variant)
    else:
        if not has_gpu():
            print("gpu_device: no NVIDIA GPU on this machine; skipped (run it where one is: see the docstring)")
            return 0 if args.if_gpu else 1
        args.part_mib = 1e9  # one part: everything is local
        prepare(args)
        tmp = Path(tempfile.mkdtemp(prefix="wlw-gpu-run-"))
        subprocess.run([sys.executable, str(GPU / "device_run.py"), "run", "--stage", str(tmp / "stage"),
                        "--out", str(tmp / "out")], check=True)
        collect(tmp / "out" / "gpu_raw.json", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
