"""Runs on the GPU machine: gathers the staged parts, runs the widget's engine under Node + Dawn, measures the GPU.

Standard library only, plus PyTorch when present (for the copy bandwidth); it must run on a bare CUDA image with
no project install. ``bench/gpu_device.py prepare`` stages what it needs under ``.gpu/p1``, ``.gpu/p2``, ... (each
small enough for one transfer); every call of this script first copies the parts it finds into ``--stage``, so
the parts may arrive over several calls while the machine stays up.

    python3 bench/gpu/device_run.py stash            # only collect the parts that came with this call
    python3 bench/gpu/device_run.py run --unpack-debs --profile --out DIR
        # collect, then smoke job + model job (+ a profiled run) + torch bandwidth -> DIR/gpu_raw.json
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ICD_DIRS = ["/usr/local/nvidia/share/vulkan/icd.d", "/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d",
            "/usr/local/share/vulkan/icd.d"]


def log(msg: str) -> None:
    print(f"[device_run {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stash(staged: Path, stage: Path) -> list[str]:
    """Copy every staged part that came with this call into ``stage`` (kept between calls while the machine is up)."""
    stage.mkdir(parents=True, exist_ok=True)
    for part in sorted(staged.glob("[pc][0-9]*")):
        for f in part.iterdir():
            dst = stage / f.name
            if not dst.exists() or dst.stat().st_size != f.stat().st_size:
                shutil.copyfile(f, dst)
    have = sorted(p.name for p in stage.iterdir())
    log(f"stage {stage}: {len(have)} files, {sum((stage / n).stat().st_size for n in have if (stage / n).is_file()) / 1e6:.1f} MB")
    return have


def unxz(src: Path, dst: Path, mode: int = 0o644) -> Path:
    if not dst.exists():
        import lzma

        with lzma.open(src) as fi, open(dst.with_suffix(".tmp"), "wb") as fo:
            shutil.copyfileobj(fi, fo, 1 << 22)
        os.replace(dst.with_suffix(".tmp"), dst)
        os.chmod(dst, mode)
    return dst


def vulkan_env(stage: Path, unpack_debs: bool = False) -> dict:
    """The NVIDIA ICD file, and with ``unpack_debs`` (a bare GPU image, as root) the staged Vulkan loader and GLVND
    .debs unpacked into / when any of their libraries is missing."""
    env = dict(os.environ)
    def have(lib: str) -> bool:
        return lib in subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout or any(
            (Path(d) / lib).exists() for d in env.get("LD_LIBRARY_PATH", "").split(":") if d)

    # NVIDIA's Vulkan ICD (libGLX_nvidia) needs GLVND's libGLdispatch beside the loader
    libs = ["libvulkan.so.1", "libGLdispatch.so.0", "libGLX.so.0", "libGL.so.1", "libEGL.so.1", "libOpenGL.so.0"]
    if unpack_debs and not all(have(x) for x in libs):
        for deb in sorted(stage.glob("*.deb")) + sorted((ROOT / ".gl").glob("*.deb")):
            subprocess.run(["dpkg", "-x", str(deb), "/"], check=True)
        subprocess.run(["ldconfig"], check=False)
    have_loader = have("libvulkan.so.1")
    icds = [f for d in ICD_DIRS for f in sorted(glob.glob(f"{d}/*.json")) if "nvidia" in f.lower()]
    if icds:
        env["VK_DRIVER_FILES"] = env["VK_ICD_FILENAMES"] = icds[0]
    env["__vulkan"] = json.dumps({"loader": have_loader, "icd": icds[0] if icds else None,
                                  "icds_seen": [f for d in ICD_DIRS for f in glob.glob(f"{d}/*.json")]})
    return env


def torch_probe() -> dict:
    """GPU name, and device memory bandwidth from a large device-to-device copy (bytes read + written) and a
    read-only reduction, timed with CUDA events (median of 20 after 3 warm-ups)."""
    try:
        import torch
    except ImportError as e:
        return {"error": f"no torch: {e}"}
    if not torch.cuda.is_available():
        return {"error": "torch sees no CUDA device"}
    p = torch.cuda.get_device_properties(0)
    out: dict = {"name": torch.cuda.get_device_name(0), "torch": torch.__version__, "sm_count": p.multi_processor_count,
                 "mem_gib": round(p.total_memory / 2**30, 1)}
    n = 2 * 2**30 // 4  # 2 GiB of float32
    x = torch.rand(n, device="cuda")
    y = torch.empty_like(x)

    def timed(fn, reps=20):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            ts.append(a.elapsed_time(b) / 1e3)
        ts.sort()
        return ts[len(ts) // 2], ts[0], ts[-1]

    med, lo, hi = timed(lambda: y.copy_(x))
    nbytes = 2 * x.numel() * 4
    out["copy"] = {"bytes": nbytes, "median_s": med, "GBps_median": nbytes / med / 1e9, "GBps_best": nbytes / lo / 1e9,
                   "GBps_worst": nbytes / hi / 1e9}
    med, lo, hi = timed(lambda: torch.sum(x))
    nbytes = x.numel() * 4
    out["read"] = {"bytes": nbytes, "median_s": med, "GBps_median": nbytes / med / 1e9, "GBps_best": nbytes / lo / 1e9}
    del x, y
    torch.cuda.empty_cache()
    return out


def nvidia_smi() -> dict:
    q = "name,driver_version,memory.total,clocks.max.memory,clocks.max.sm,pstate,power.limit"
    try:
        r = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True, text=True,
                           timeout=30)
        return dict(zip(q.split(","), [x.strip() for x in r.stdout.strip().split("\n")[0].split(",")]))
    except Exception as e:  # noqa: BLE001
        return {"error": str(e)}


def run_job(node: Path, bundle: Path, job: Path, out_json: Path, env: dict, timeout: int) -> dict:
    t = time.time()
    r = subprocess.run([str(node), str(bundle), str(job), str(out_json)], env=env, capture_output=True, text=True,
                       timeout=timeout)
    res = {"rc": r.returncode, "wall_s": round(time.time() - t, 1), "stderr_tail": r.stderr[-3000:]}
    print(r.stderr[-3000:], flush=True)
    if out_json.exists():
        res["result"] = json.loads(out_json.read_text())
    return res


def profile(node: Path, bundle: Path, st: Path, job: dict, out: Path, env: dict) -> dict:
    """One short run of the model job (first prompt, 64 tokens) under Node's CPU profiler, with nvidia-smi
    sampling GPU utilization every 50 ms: tells whether the host (JS, wasm, Dawn calls) or the GPU limits decode."""
    first = next(iter(job["prompts"]))
    spec = dict(job, prompts={first: job["prompts"][first]}, max_tokens=64, runs=1, warmup=1,
                dawn=str(st / "dawn.node"), files=str(st / "files-model"))
    jp = st / "job-profile.json"
    jp.write_text(json.dumps(spec))
    (out / "prof").mkdir(exist_ok=True)
    smi = None if not shutil.which("nvidia-smi") else subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,utilization.gpu,utilization.memory,clocks.sm",
                            "--format=csv,noheader", "-lms", "50"], stdout=open(out / "prof" / "gpu_util.csv", "w"))
    t = time.time()
    r = subprocess.run([str(node), "--cpu-prof", f"--cpu-prof-dir={out / 'prof'}", "--cpu-prof-interval=200",
                        str(bundle), str(jp), str(out / "profile.json")], env=env, capture_output=True, text=True,
                       timeout=300)
    if smi:
        smi.terminate()
    log(f"profile rc {r.returncode} in {time.time() - t:.1f} s: {r.stderr[-500:]}")
    return {"rc": r.returncode, "wall_s": round(time.time() - t, 1),
            "result": json.loads((out / "profile.json").read_text()) if (out / "profile.json").exists() else None}


def model_files(st: Path, name: str, job: dict) -> Path:
    """The job's model folder files (named by sha256) under st/files-<name>, joined from its staged tar pieces."""
    files = st / f"files-{name}"
    if job.get("parts") and not files.exists():
        # the model folder's files travel as one tar cut into pieces; sha256 is checked again by the engine
        cat = st / f"{name}.tar"
        with open(cat.with_suffix(".tar.xz") if job.get("tar_xz") else cat, "wb") as fo:
            for p in job["parts"]:
                with open(st / p, "rb") as fi:
                    shutil.copyfileobj(fi, fo, 1 << 22)
        if job.get("tar_xz"):  # prepare --xz-jobs
            unxz(cat.with_suffix(".tar.xz"), cat)
            cat.with_suffix(".tar.xz").unlink()
        h = hashlib.sha256(cat.read_bytes()).hexdigest()
        if h != job["tar_sha256"]:
            raise ValueError(f"{name}.tar sha256 {h} != {job['tar_sha256']}")
        with tarfile.open(cat) as tf:
            tf.extractall(files.with_suffix(".tmp"))
        os.replace(files.with_suffix(".tmp"), files)
        cat.unlink()
    if job.get("shares"):  # the files it has in common with another job (same weights, another library)
        other = model_files(st, job["shares"], json.loads((st / "manifest.json").read_text())["jobs"][job["shares"]])
        files.mkdir(exist_ok=True)
        for f in other.iterdir():
            if not (files / f.name).exists():
                os.symlink(f, files / f.name)
    if job.get("generate"):
        generated_weights(st, name, job, files)
    return files


def generated_weights(st: Path, name: str, job: dict, files: Path) -> dict:
    """A job staged without its parameter shards (``generate``: {"cache", "seed"[, "same_as"]}): write them here
    (random_weights.py: random records in the staged layout), join them to ``files`` by sha256 and put their
    sha256 and size into the job's spec in place. ``same_as``: another job whose shards have the same layout
    (byte for byte the same records in the same places): its shard files are used, not a second random set.
    Idempotent: a later call (another process of the same run) reads what the first wrote."""
    gen = job["generate"]
    spec = job["job"]["spec"]
    named = st / f"named-{name}"
    done = named / "_generated.json"
    if not done.exists():
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import random_weights

        tmp = named.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in spec["files"]:  # the staged files by their names (the shards are not among them)
            if f["sha256"] and (files / f["sha256"]).is_file():
                shutil.copyfile(files / f["sha256"], tmp / f["name"])
        t = time.time()
        other = gen.get("same_as")
        if other:
            ojob = json.loads((st / "manifest.json").read_text())["jobs"][other]
            model_files(st, other, ojob)
            src = st / f"named-{other}"
            for shard in json.loads((tmp / gen["cache"]).read_text())["records"]:
                os.link(src / shard["dataPath"], tmp / shard["dataPath"])
            mine = json.loads((tmp / gen["cache"]).read_text())
            theirs = json.loads((src / ojob["generate"]["cache"]).read_text())
            for a, b in zip(mine["records"], theirs["records"]):  # the same bytes: the same md5 per shard
                a["md5sum"] = b.get("md5sum")
            (tmp / gen["cache"]).write_text(json.dumps(mine, indent=1))
            out = {p.name: {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "size": p.stat().st_size}
                   for p in sorted(tmp.iterdir()) if p.is_file()}
        else:
            out = random_weights.fill(tmp, gen["cache"], int(gen.get("seed", 0)))
        log(f"{name}: weights generated in {time.time() - t:.1f} s ({sum(v['size'] for v in out.values()) / 1e6:.0f} MB)")
        (tmp / "_generated.json").write_text(json.dumps(out))
        shutil.rmtree(named, ignore_errors=True)
        os.replace(tmp, named)
    out = json.loads(done.read_text())
    for fname, v in out.items():
        if not (files / v["sha256"]).exists():
            os.link(named / fname, files / v["sha256"])
    spec["files"] = [dict(f, sha256=out[f["name"]]["sha256"], size=out[f["name"]]["size"]) if f["name"] in out else f
                     for f in spec["files"]]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["stash", "run", "probe"],
                    help="probe: only the GPU (nvidia-smi, Vulkan, torch copy bandwidth) and the manifest, no Node")
    ap.add_argument("--staged", type=Path, default=ROOT / ".gpu")
    ap.add_argument("--stage", type=Path, default=Path("/tmp/wlw-gpu-stage"))
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/wlw-gpu-out")))
    ap.add_argument("--timeout", type=int, default=420, help="seconds for the model job")
    ap.add_argument("--unpack-debs", action="store_true",
                    help="unpack the staged Vulkan loader / GLVND .debs into / where missing (a bare GPU image, as root)")
    ap.add_argument("--profile", action="store_true",
                    help="then one short model run under node --cpu-prof (to OUT/prof), GPU utilization sampled beside it")
    ap.add_argument("--jobs", default=None, help="comma-separated staged jobs to run under Node (default: all; '' none)")
    args = ap.parse_args(argv)
    have = stash(args.staged, args.stage)
    if args.what == "stash":
        return 0
    st = args.stage
    args.out.mkdir(parents=True, exist_ok=True)
    raw: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "staged": have,
                 "host_node": shutil.which("node")}
    manifest = json.loads((st / "manifest.json").read_text())
    raw["manifest"] = manifest
    if args.what == "probe":
        env = vulkan_env(st, args.unpack_debs)
        raw["vulkan"] = json.loads(env.pop("__vulkan"))
        raw["nvidia_smi"] = nvidia_smi()
        raw["jobs"] = {}
        raw["torch"] = torch_probe()
        (args.out / "gpu_raw.json").write_text(json.dumps(raw, indent=1, default=str))
        log(f"probe: gpu {raw['nvidia_smi']}; torch {json.dumps(raw['torch'])[:300]}")
        return 0
    node = Path(raw["host_node"]) if (raw["host_node"] and not (st / "node.xz").exists()) else unxz(st / "node.xz", st / "node", 0o755)
    unxz(st / "dawn.node.xz", st / "dawn.node")
    bundle = unxz(st / "engine_node.cjs.xz", st / "engine_node.cjs")
    env = vulkan_env(st, args.unpack_debs)
    raw["vulkan"] = json.loads(env.pop("__vulkan"))
    raw["nvidia_smi"] = nvidia_smi()
    log(f"vulkan {raw['vulkan']}; gpu {raw['nvidia_smi']}")
    raw["jobs"] = {}

    def write():
        (args.out / "gpu_raw.json").write_text(json.dumps(raw, indent=1, default=str))

    for name, job in manifest["jobs"].items():
        if args.jobs is not None and name not in args.jobs.split(","):
            continue
        missing = [p for p in job.get("parts", []) if p not in have]
        if missing:
            raw["jobs"][name] = {"skipped": f"parts not here yet: {missing}"}
            log(f"{name}: skipped, missing {missing}")
            continue
        try:
            files = model_files(st, name, job)
        except ValueError as e:
            raw["jobs"][name] = {"error": str(e)}
            write()
            continue
        spec = dict(job["job"], dawn=str(st / "dawn.node"), files=str(files))
        jp = st / f"job-{name}.json"
        jp.write_text(json.dumps(spec))
        log(f"{name}: running {job['job']['spec']['id']}")
        raw["jobs"][name] = run_job(node, bundle, jp, args.out / f"{name}.json", env, args.timeout)
        write()
    if args.profile and (raw["jobs"].get("model") or {}).get("rc") == 0:
        raw["profile"] = profile(node, bundle, st, manifest["jobs"]["model"]["job"], args.out, env)
        write()
    log("torch probe")
    raw["torch"] = torch_probe()
    write()
    log(json.dumps({k: v.get("rc", v) if isinstance(v, dict) else v for k, v in raw["jobs"].items()}))
    log(f"torch: {json.dumps(raw['torch'])[:400]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
