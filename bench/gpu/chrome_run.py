"""Runs on the GPU machine: the widget's engine in a real headless Chromium on the GPU, the decode benchmark there.

The product's runtime is a browser, so this is the number a user gets: the same engine bundle the Chat widget
loads (runner.js + engine_worker.js: web-llm in a Worker), the same model files (the staged model job of
``bench/gpu_device.py prepare``), in Debian's Chromium carried as ``chrome.tar.xz`` (the browser and the shared
libraries it needs, unpacked into a private prefix and found through LD_LIBRARY_PATH). Standard library only.

A tiny HTTP server on loopback serves the page, the engine and the model files (``/blob/<sha256>``); the page
runs the job and posts its results back (no DevTools protocol, no Playwright on that machine). Before the run,
each flag set is tried with a probe page that only asks ``navigator.gpu.requestAdapter()``; the first set whose
adapter is the hardware one (not a fallback adapter) runs the model.

    python3 bench/gpu/chrome_run.py --out DIR [--flags nvidia|swiftshader] [--job model]
        # -> DIR/chrome_raw.json (+ DIR/chrome_<set>.log, Chromium's stderr per try)
    python3 bench/gpu/chrome_run.py --job official --raw-name chrome_raw_official.json --log-dir LOGS --out DIR
        # a job staged with --official-lib: MLC's web-llm release (bench/official) behind the same runner interface,
        # timed by the same page loop; a job staged with --shape gets its random shards written first

Per run: the engine's own prefill/decode tok/s (as bench/decode.py reads them), wall time, the CPU seconds of
Chromium's processes by type (browser, renderer = the page and its Worker, gpu-process = Dawn), and the compute
dispatches and queue submits the Worker made (prototype wrappers appended to engine_worker.js, counts posted back).
"""
from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import device_run  # noqa: E402  (stash, the model files, the Vulkan environment)

CLK = os.sysconf("SC_CLK_TCK")

#: Flag sets tried in order. Every set: WebGPU on, blocklist off; they differ in how GL/ANGLE and Vulkan come up.
FLAG_SETS = {
    "nvidia": {
        # The VM has no DRM node (drmGetDevices2 finds none), so Chromium's GPU info names no GPU; the testing ids
        # (NVIDIA, H100/H200 class) stand in for it. Without them requestAdapter() gave null at once (00:43).
        "vulkan-no-compositing": ["--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=native",
                                  "--ignore-gpu-blocklist", "--disable-gpu-compositing", "--disable-vulkan-surface",
                                  "--use-angle=vulkan", "--enable-dawn-features=allow_unsafe_apis"],
        "vulkan-gpu-in-tests": ["--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-angle=vulkan",
                                "--use-vulkan=native", "--disable-vulkan-surface", "--ignore-gpu-blocklist",
                                "--use-gpu-in-tests", "--gpu-testing-vendor-id=0x10de",
                                "--gpu-testing-device-id=0x2335"],
        "vulkan-verbose": ["--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-angle=vulkan",
                           "--use-vulkan=native", "--disable-vulkan-surface", "--ignore-gpu-blocklist",
                           "--vmodule=*webgpu*=3,*dawn*=3,*gpu_init*=3,*vulkan*=3,*gpu_data_manager*=3,"
                           "*gpu_util*=3,*gpu_channel*=2,*gpu_feature*=3"],
    },
    # this machine's check of the same path (SwiftShader's Vulkan ICD, as the browser tests use it)
    "swiftshader": {
        "swiftshader": ["--enable-unsafe-webgpu", "--use-angle=swiftshader", "--use-webgpu-adapter=swiftshader",
                        "--disable-vulkan-surface"],
    },
}
COMMON = ["--headless", "--no-sandbox", "--no-first-run", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--enable-logging=stderr",
          "--v=0", "--disable-features=Translate,MediaRouter", "--mute-audio"]

PAGE = b"""<!doctype html><meta charset="utf-8"><title>webllm-widget gpu bench</title>
<script>
window.__emit = (e) => {
  if (e.type === "progress" && e.phase !== window.__phase) {
    window.__phase = e.phase;
    fetch("/log", {method: "POST", body: JSON.stringify({t: "load: " + e.phase + " " + (e.text || "")})});
  }
};
</script>
<script type="module" src="/runner.js"></script>
<script type="module" src="/bench.js"></script>"""
#: The page of a job staged with "official" (bench/gpu_device.py prepare --official-lib): MLC's web-llm release
#: (bench/official/runner.js, bundled) behind the same window.webllmRunner interface, timed by the same BENCH_JS.
OFFICIAL_PAGE = PAGE.replace(b'src="/runner.js"', b'src="/official_runner.js"')

BENCH_JS = r"""
const post = async (p, o) => (await fetch(p, {method: "POST", body: JSON.stringify(o)})).json();
const log = (t) => post("/log", {t});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const summary = (xs) => {
  xs = xs.filter((x) => typeof x === "number");
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : null;
  return {median: m, min: s[0] ?? null, max: s[s.length - 1] ?? null, runs: xs};
};
async function main() {
  const job = await (await fetch("/job.json")).json();
  const out = {user_agent: navigator.userAgent};
  if (!navigator.gpu) return {...out, error: "navigator.gpu is missing"};
  const a = await Promise.race([navigator.gpu.requestAdapter({powerPreference: "high-performance"}), sleep(20000)]);
  if (!a) return {...out, error: "requestAdapter() gave no adapter (or hung 20 s)"};
  const i = a.info || {};
  out.adapter_info = {vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description,
    is_fallback: !!(i.isFallbackAdapter ?? a.isFallbackAdapter)};
  out.features = [...a.features];
  out.adapter_limits = {maxBufferSize: a.limits.maxBufferSize, maxStorageBufferBindingSize: a.limits.maxStorageBufferBindingSize,
    maxComputeWorkgroupStorageSize: a.limits.maxComputeWorkgroupStorageSize};
  if (job.probe_only) return out;
  const R = window.webllmRunner;
  if (job.dispatch) window.__webllmWidgetDispatch = job.dispatch;  // "upstream": tvmjs's own kernel dispatch
  if (job.decode_loop) window.__webllmWidgetDecodeLoop = job.decode_loop;  // "sync": web-llm's own decode loop
  const t0 = performance.now();
  const info = await R.load(job.spec);
  if (info.error) return {...out, error: `load: [${info.error.code}] ${info.error.message}`};
  out.load = {...info, wall_s: (performance.now() - t0) / 1000};
  await log(`loaded ${info.model} (${info.schedule}) in ${out.load.wall_s.toFixed(1)} s`);
  out.prompts = {};
  for (const [n, messages] of Object.entries(job.prompts)) {
    const rows = [];
    let text = "", lastStats = null;
    for (let k = 0; k < (job.warmup ?? 1) + job.runs; k++) {
      await R.reset();
      await sleep(300);  // the Worker posts its counters every 100 ms
      const c0 = await post("/mark", {});
      const t = performance.now();
      const r = await R.generate(messages, {temperature: 0, max_tokens: job.max_tokens, ignore_eos: true});
      const wall = (performance.now() - t) / 1000;
      const c1a = await post("/mark", {});
      await sleep(300);
      const c1 = await post("/mark", {});
      if (r.error) return {...out, error: `generate: [${r.error.code}] ${r.error.message}`};
      text = r.text ?? "";
      lastStats = r.dispatch_stats ?? null;
      if (k < (job.warmup ?? 1)) continue;  // the first run compiles pipelines
      const u = r.usage;
      const cpu = {};
      for (const [ty, s] of Object.entries(c1a.cpu)) cpu[ty] = s - (c0.cpu[ty] ?? 0);
      rows.push({wall_s: wall, cpu_s: Object.values(cpu).reduce((x, y) => x + y, 0), cpu_by_type: cpu,
        dispatches: c1.counts.d - c0.counts.d, submits: c1.counts.s - c0.counts.s,
        prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens, decode_loop: u.decode_loop,
        prefill_tok_s: u.prefill_tokens_per_s, decode_tok_s: u.decode_tokens_per_s,
        ttft_s: u.time_to_first_token_s, finish_reason: r.finish_reason, window: [c0.t, c1a.t]});
    }
    const col = (key) => rows.map((r) => r[key]);
    const types = Object.keys(rows[0]?.cpu_by_type ?? {});
    out.prompts[n] = {prompt_tokens: rows[0]?.prompt_tokens, completion_tokens: rows[0]?.completion_tokens,
      decode_loop: rows[0]?.decode_loop,
      prefill_tok_s: summary(col("prefill_tok_s")), decode_tok_s: summary(col("decode_tok_s")),
      ttft_s: summary(col("ttft_s")), wall_s: summary(col("wall_s")), cpu_s: summary(col("cpu_s")),
      cpu_s_by_type: Object.fromEntries(types.map((ty) => [ty, summary(rows.map((r) => r.cpu_by_type[ty]))])),
      dispatches: rows[0]?.dispatches, submits: rows[0]?.submits, text_head: text.slice(0, 200),
      windows: col("window"), dispatch_stats: lastStats};
    const p = out.prompts[n];
    await log(`prompt ${n}: prefill ${p.prefill_tok_s.median?.toFixed(1)} tok/s, decode ${p.decode_tok_s.median?.toFixed(1)} tok/s, ` +
      `${p.dispatches} dispatches, cpu ${p.cpu_s.median?.toFixed(2)} s / wall ${p.wall_s.median?.toFixed(2)} s`);
    await post("/partial", out);
  }
  return out;
}
main().then((r) => post("/result", r), (e) => post("/result", {error: `page: ${e?.stack ?? e}`}));
"""

#: Appended to engine_worker.js: count compute dispatches and queue submits in the Worker, post them to the server.
WORKER_COUNTERS = r"""
;(() => {
  const c = {d: 0, s: 0};
  const P = self.GPUComputePassEncoder && self.GPUComputePassEncoder.prototype;
  if (!P) return;
  const d = P.dispatchWorkgroups;
  P.dispatchWorkgroups = function (...a) { c.d++; return d.apply(this, a); };
  const Q = self.GPUQueue.prototype, s = Q.submit;
  Q.submit = function (...a) { c.s++; return s.apply(this, a); };
  let last = -1;
  setInterval(() => {
    if (c.d + c.s === last) return;
    last = c.d + c.s;
    fetch(self.location.origin + "/count", {method: "POST", body: JSON.stringify(c)}).catch(() => {});
  }, 100);
})();
"""


#: Appended to engine_worker.js in --kernels mode: GPU time of every compute pass by timestamp queries (the device is
#: asked for "timestamp-query" when the adapter has it), grouped into the engine's steps. A step ends where the engine
#: reads a result back (its mapAsync resolves: the sampled token once per decode step). Per step the Worker posts its
#: wall time, the CPU-side time until its last submit, dispatches, and per kernel (pipeline entry point) GPU ns.
WORKER_KERNELS = r"""
;(() => {
  const A = self.GPUAdapter && self.GPUAdapter.prototype;
  if (!A) return;
  const CAP = 2048;  // passes in flight: 2 queries each, 4096 per query set
  const K = {dev: null, qs: null, ts: false, next: 0, done: 0, cur: [], seg: null, out: [], skipped: 0, err: null,
             names: new WeakMap(), pass: new WeakMap(), pool: []};
  const now = () => performance.now();
  const newSeg = (t) => ({t0: t, tsub: t, d: 0, s: 0, batches: []});
  K.seg = newSeg(now());
  const rd = A.requestDevice;
  A.requestDevice = async function (desc) {
    desc = desc || {};
    const want = this.features.has("timestamp-query") ? ["timestamp-query"] : [];
    const dev = await rd.call(this, {...desc, requiredFeatures: [...new Set([...(desc.requiredFeatures || []), ...want])]});
    K.dev = dev;
    K.ts = dev.features.has("timestamp-query");
    if (K.ts) {
      K.qs = dev.createQuerySet({type: "timestamp", count: 2 * CAP});
      // resolveQuerySet's destination offset must be a multiple of 256: each range goes to offset 0 of its own buffer
      K.res = [0, 1].map(() => dev.createBuffer({size: 2 * CAP * 8, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC}));
    }
    fetch(self.location.origin + "/kinfo", {method: "POST", body: JSON.stringify({timestamps: K.ts,
      adapter_features: [...this.features], device_features: [...dev.features]})}).catch(() => {});
    return dev;
  };
  const D = self.GPUDevice.prototype;
  for (const m of ["createComputePipeline", "createComputePipelineAsync"]) {
    const f = D[m];
    D[m] = function (d) { return f.call(this, {...d, label: d.label || String((d.compute || {}).entryPoint || "?")}); };
  }
  const E = self.GPUCommandEncoder.prototype, bcp = E.beginComputePass;
  E.beginComputePass = function (d) {
    if (!K.qs || K.next - K.done >= CAP || (d && d.timestampWrites)) { K.skipped++; return bcp.call(this, d); }
    const slot = K.next++ % CAP;
    const rec = {slot, name: "?", ns: null, b: null};
    K.cur.push(rec);
    const pass = bcp.call(this, {...(d || {}), timestampWrites: {querySet: K.qs, beginningOfPassWriteIndex: 2 * slot,
                                                                 endOfPassWriteIndex: 2 * slot + 1}});
    K.pass.set(pass, rec);
    return pass;
  };
  const P = self.GPUComputePassEncoder.prototype, sp = P.setPipeline, dw = P.dispatchWorkgroups;
  P.setPipeline = function (p) { const r = K.pass.get(this); if (r) r.name = p.label || "?"; return sp.call(this, p); };
  P.dispatchWorkgroups = function (...a) { K.seg.d++; return dw.apply(this, a); };
  const Q = self.GPUQueue.prototype, sub = Q.submit;
  const B = self.GPUBuffer.prototype, map = B.mapAsync;
  Q.submit = function (cbs) {
    const r = sub.call(this, cbs);
    K.seg.s++;
    K.seg.tsub = now();
    if (K.cur.length && K.dev) {
      const batch = K.cur;
      K.cur = [];
      const first = batch[0].slot, n = batch.length, size = 2 * n * 8;
      const enc = K.dev.createCommandEncoder();
      const ranges = first + n <= CAP ? [[first, n, 0]] : [[first, CAP - first, 0], [0, first + n - CAP, CAP - first]];
      let buf = K.pool.pop();
      if (!buf) buf = K.dev.createBuffer({size: 2 * CAP * 8, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST});
      ranges.forEach(([s0, c, at], j) => {
        enc.resolveQuerySet(K.qs, 2 * s0, 2 * c, K.res[j], 0);
        enc.copyBufferToBuffer(K.res[j], 0, buf, 2 * at * 8, 2 * c * 8);
      });
      sub.call(this, [enc.finish()]);
      const b = {n, left: true};
      K.seg.batches.push(b);
      map.call(buf, GPUMapMode.READ, 0, size).then(() => {
        const t = new BigUint64Array(buf.getMappedRange(0, size).slice(0));
        buf.unmap();
        K.pool.push(buf);
        b.passes = batch.map((p, i) => ({name: p.name, b: Number(t[2 * i]), ns: t[2 * i + 1] > t[2 * i] ? Number(t[2 * i + 1] - t[2 * i]) : 0}));
        b.left = false;
        K.done += n;
      }, (e) => { K.err = String(e); b.left = false; K.done += n; });
    }
    return r;
  };
  B.mapAsync = function (...a) {
    return map.apply(this, a).then((v) => {
      const t = now(), s = K.seg;
      if (s.d || s.s) {
        s.t1 = t;
        s.epoch_ms = performance.timeOrigin + t;
        K.out.push(s);
        K.seg = newSeg(t);
      }
      return v;
    });
  };
  setInterval(() => {
    const ready = [];
    while (K.out.length && !K.out[0].batches.some((b) => b.left)) ready.push(K.out.shift());
    if (!ready.length) return;
    const rows = ready.map((s) => {
      const kern = {};
      let busy = 0, lo = Infinity, hi = -Infinity;
      for (const b of s.batches) for (const p of b.passes || []) {
        const k = kern[p.name] || (kern[p.name] = [0, 0]);
        k[0] += p.ns; k[1]++; busy += p.ns;
        if (p.b) { lo = Math.min(lo, p.b); hi = Math.max(hi, p.b + p.ns); }
      }
      return {epoch_ms: s.epoch_ms, wall_ms: s.t1 - s.t0, encode_ms: s.tsub - s.t0, dispatches: s.d, submits: s.s,
              timed_passes: s.batches.reduce((x, b) => x + b.n, 0), gpu_busy_ms: busy / 1e6,
              gpu_span_ms: hi > lo ? (hi - lo) / 1e6 : null, kernels: kern};
    });
    fetch(self.location.origin + "/ksegs", {method: "POST", body: JSON.stringify({rows, skipped: K.skipped, err: K.err})})
      .catch(() => {});
  }, 250);
})();
"""

#: Chromium flags of the --kernels run: full-resolution timestamps (Chrome quantizes them to 100 us otherwise).
KERNEL_FLAGS = ["--enable-webgpu-developer-features", "--disable-dawn-features=timestamp_quantization"]

def tree_cpu(root_pid: int) -> dict:
    """CPU seconds (user + system) of root_pid and its descendants, summed by Chromium process type."""
    parent, ptype, cpu = {}, {}, {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            st = (d / "stat").read_text()
            f = st[st.rindex(")") + 2:].split()
            parent[int(d.name)] = int(f[1])
            cpu[int(d.name)] = (int(f[11]) + int(f[12])) / CLK
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").split()  # renderers rewrite their title
            t = next((a.split(b"=", 1)[1].decode() for a in cmd if a.startswith(b"--type=")), "browser")
            if t == "utility":
                t = next((a.split(b"=", 1)[1].decode() for a in cmd if a.startswith(b"--utility-sub-type=")), t)
            ptype[int(d.name)] = t
        except (OSError, ValueError, IndexError):
            continue
    out: dict = {}
    for pid in cpu:
        p, seen = pid, 0
        while p and p != root_pid and seen < 64:
            p, seen = parent.get(p, 0), seen + 1
        if p == root_pid:
            out[ptype[pid]] = out.get(ptype[pid], 0.0) + cpu[pid]
    return out


def _med(xs: list) -> float | None:
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def kernel_summary(segs: list[dict], prompts: dict, info: dict, state: dict, top: int = 12) -> dict:
    """The Worker's steps (WORKER_KERNELS rows) -> per prompt: decode steps' wall vs GPU time and the top kernels.

    Steps are placed in the measured runs by their end time (the page's marks before and after each generate);
    in each run the first step with dispatches is the prefill, the rest are decode steps. GPU busy = the sum of the
    compute passes' timestamp durations; GPU span = first pass start to last pass end of the step (busy plus the
    GPU's idle gaps between passes); encode = the Worker's time from the step's start to its last submit."""
    out: dict = {"timestamps": info.get("timestamps"), "adapter_features": info.get("adapter_features"),
                 "device_features": info.get("device_features"), "untimed_passes": state.get("skipped"),
                 "readback_error": state.get("err"), "steps_seen": len(segs), "per_prompt": {}}
    for n, p in prompts.items():
        dec, pre, per_run, first = [], [], [], None
        for a, b in p.get("windows") or []:
            run = sorted((s for s in segs if a * 1e3 <= (s.get("epoch_ms") or 0) <= b * 1e3 and s.get("dispatches")),
                         key=lambda s: s["epoch_ms"])
            per_run.append(len(run))
            if first is None:  # the first measured run's steps, compact, to read the pattern from
                first = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != "kernels"}
                         for r in run]
            if run:
                pre.append(run[0])
                dec.extend(run[1:])
        if not dec:
            out["per_prompt"][n] = {"steps_per_run": per_run}
            continue

        def stats(rows: list[dict], keys=("wall_ms", "encode_ms", "gpu_busy_ms", "gpu_span_ms", "dispatches",
                                          "submits", "timed_passes")) -> dict:
            return {k: {"median": _med([r.get(k) for r in rows]), "mean": _mean([r.get(k) for r in rows])} for k in keys}
        d = stats(dec)
        kern: dict = {}
        for s in dec:
            for name, (ns, calls) in (s.get("kernels") or {}).items():
                k = kern.setdefault(name, [0.0, 0])
                k[0] += ns / 1e6
                k[1] += calls
        busy = d["gpu_busy_ms"]["mean"] or 0
        rows = sorted(({"kernel": name, "ms_per_step": v[0] / len(dec), "calls_per_step": v[1] / len(dec),
                        "us_per_call": 1e3 * v[0] / v[1] if v[1] else None,
                        "share_of_gpu": (v[0] / len(dec)) / busy if busy else None} for name, v in kern.items()),
                      key=lambda r: -r["ms_per_step"])
        wall = d["wall_ms"]["mean"]
        out["per_prompt"][n] = {
            "steps_per_run": per_run, "decode_steps": len(dec), "decode": d,
            # the prefill step's wall starts at the previous run's end (reset, marks): only its GPU side is kept
            "prefill": stats(pre, ("gpu_busy_ms", "gpu_span_ms", "dispatches", "submits")),
            "gpu_busy_share_of_wall": busy / wall if wall else None,
            "gpu_span_share_of_wall": (d["gpu_span_ms"]["mean"] or 0) / wall if wall else None,
            "encode_share_of_wall": (d["encode_ms"]["mean"] or 0) / wall if wall else None,
            "kernels_distinct": len(rows), "top_kernels": rows[:top], "first_run_steps": first}
    return out


class Server:
    """Serves the page, the engine, the job and the model files; collects logs, counters and the result."""

    def __init__(self, static: Path, files: Path | None, job: dict):
        self.static, self.files, self.job = static, files, job
        self.counts = {"d": 0, "s": 0}
        self.kinfo: dict = {}
        self.ksegs: list[dict] = []
        self.kstate: dict = {}
        self.result: dict | None = None
        self.partial: dict | None = None
        self.logs: list[str] = []
        self.chrome_pid = 0
        self.done = threading.Event()
        srv = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, body: bytes, ctype: str, code: int = 200):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                p = self.path.split("?")[0]
                official = srv.job.get("official")
                if official and srv.files:
                    # MLC's web-llm: its page, its Worker (with the dispatch counters), the model by file name
                    by_name = {f["name"]: f["sha256"] for f in srv.job["spec"]["files"]}
                    if p in ("/", "/index.html"):
                        return self._send(OFFICIAL_PAGE, "text/html")
                    if p in ("/official_runner.js", "/official_worker.js"):
                        body = (srv.files / by_name[p[1:]]).read_bytes()
                        extra = WORKER_COUNTERS.encode() if p == "/official_worker.js" else b""
                        return self._send(body + extra, "text/javascript")
                    prefix = "/official/resolve/main/"
                    if p.startswith(prefix) and p[len(prefix):] in by_name:
                        f = srv.files / by_name[p[len(prefix):]]
                        ctype = "application/wasm" if p.endswith(".wasm") else "application/octet-stream"
                        return self._send(f.read_bytes(), ctype)
                if p in ("/", "/index.html"):
                    return self._send(PAGE, "text/html")
                if p == "/bench.js":
                    return self._send(BENCH_JS.encode(), "text/javascript")
                if p == "/runner.js":
                    return self._send((srv.static / "runner.js").read_bytes(), "text/javascript")
                if p == "/engine_worker.js":
                    extra = WORKER_KERNELS if srv.job.get("kernels") else ""
                    return self._send((srv.static / "engine_worker.js").read_bytes() + WORKER_COUNTERS.encode()
                                      + extra.encode(), "text/javascript")
                if p == "/job.json":
                    return self._send(json.dumps(srv.job).encode(), "application/json")
                if p.startswith("/blob/") and srv.files:
                    f = srv.files / p[len("/blob/"):]
                    if f.is_file() and f.parent == srv.files:
                        return self._send(f.read_bytes(), "application/octet-stream")
                return self._send(b"not found", "text/plain", 404)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                p = self.path
                if p == "/count":
                    srv.counts = body
                elif p == "/kinfo":
                    srv.kinfo = body
                elif p == "/ksegs":
                    srv.ksegs.extend(body.get("rows") or [])
                    srv.kstate = {k: body.get(k) for k in ("skipped", "err")}
                elif p == "/log":
                    srv.logs.append(f"{time.strftime('%H:%M:%S')} {body.get('t')}")
                    print(f"[page] {body.get('t')}", flush=True)
                elif p == "/mark":
                    return self._send(json.dumps({"counts": srv.counts, "cpu": tree_cpu(srv.chrome_pid),
                                                  "t": time.time()}).encode(),
                                      "application/json")
                elif p == "/partial":
                    srv.partial = body
                elif p == "/result":
                    srv.result = body
                    srv.done.set()
                self._send(b"{}", "application/json")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def unpack_chrome(stage: Path) -> Path:
    """chrome.tar.xz(.NNN pieces) in the stage -> stage/chrome/{chromium/, lib/, fonts/}; returns that prefix."""
    prefix = stage / "chrome"
    if (prefix / "chromium" / "chromium").exists():
        return prefix
    pieces = sorted(stage.glob("chrome.tar.xz.*"))
    if not pieces:
        raise SystemExit(f"no chrome.tar.xz.* pieces in {stage}")
    whole = stage / "chrome.tar.xz"
    with open(whole, "wb") as fo:
        for p in pieces:
            with open(p, "rb") as fi:
                shutil.copyfileobj(fi, fo, 1 << 22)
    tmp = stage / "chrome.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(whole, "r:xz") as tf:
        tf.extractall(tmp)
    os.replace(tmp, prefix)
    whole.unlink()
    return prefix


def chrome_env(prefix: Path, base: dict) -> dict:
    env = dict(base)
    env["LD_LIBRARY_PATH"] = ":".join(x for x in [str(prefix / "chromium"), str(prefix / "lib"),
                                                  base.get("LD_LIBRARY_PATH", "")] if x)
    fonts = prefix / "fonts"
    if fonts.is_dir():
        conf = prefix / "fonts.conf"
        conf.write_text(f'<?xml version="1.0"?><fontconfig><dir>{fonts}</dir><cachedir>{prefix / "fc-cache"}'
                        "</cachedir></fontconfig>")
        env["FONTCONFIG_FILE"] = str(conf)
    env.setdefault("HOME", "/tmp")
    egl = Path("/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json")  # the device README's EGL vendor file
    if egl.exists():
        env.setdefault("__EGL_VENDOR_LIBRARY_FILENAMES", str(egl))
    return env


def launch(exe: Path, flags: list[str], port: int, env: dict, log: Path, profile: Path) -> subprocess.Popen:
    args = [str(exe), *COMMON, *flags, f"--user-data-dir={profile}", f"http://127.0.0.1:{port}/"]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "wb"), start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait(5)


def attempt(exe: Path, static: Path, files: Path | None, job: dict, flags: list[str], env: dict, log: Path,
            timeout: float) -> dict:
    srv = Server(static, files, job)
    profile = Path(tempfile.mkdtemp(prefix="wlw-chrome-profile-"))
    t = time.time()
    proc = launch(exe, flags, srv.port, env, log, profile)
    srv.chrome_pid = proc.pid
    try:
        while not srv.done.wait(0.5):
            if proc.poll() is not None:
                break
            if time.time() - t > timeout:
                break
        res = srv.result or dict(srv.partial or {}, error=(
            f"chromium exited with {proc.returncode}" if proc.poll() is not None else f"no result in {timeout:.0f} s"))
    finally:
        stop(proc)
        srv.close()
        shutil.rmtree(profile, ignore_errors=True)
    res["wall_s"] = round(time.time() - t, 1)
    res["page_log"] = srv.logs
    if job.get("kernels"):
        res["kernels"] = kernel_summary(srv.ksegs, res.get("prompts") or {}, srv.kinfo, srv.kstate)
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    res["stderr_tail"] = tail
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--staged", type=Path, default=device_run.ROOT / ".gpu")
    ap.add_argument("--stage", type=Path, default=Path("/tmp/wlw-gpu-stage"))
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/wlw-gpu-out")))
    ap.add_argument("--flags", choices=sorted(FLAG_SETS), default="nvidia")
    ap.add_argument("--job", default="model", help="which staged job to run (model, smoke)")
    ap.add_argument("--static", type=Path, default=None, help="runner.js + engine_worker.js (default: staged)")
    ap.add_argument("--runs", type=int, default=None, help="override the job's runs")
    ap.add_argument("--max-tokens", type=int, default=None, help="override the job's output length")
    ap.add_argument("--prompts", default=None, help="only these of the job's prompts (comma list of lengths)")
    ap.add_argument("--timeout", type=int, default=420)
    ap.add_argument("--unpack-debs", action="store_true", help="as device_run.py: the .gl set into / where missing")
    ap.add_argument("--raw-name", default="chrome_raw.json", help="the result file's name under --out")
    ap.add_argument("--log-dir", type=Path, default=None, help="Chromium's stderr logs (default: --out)")
    ap.add_argument("--stash-only", action="store_true")
    ap.add_argument("--probe-only", action="store_true", help="only try the flag sets (no model needed)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=FLAG;FLAG",
                    help="after the bench, the same job again with these Chromium flags added (e.g. Dawn toggles)")
    ap.add_argument("--kernels", action="store_true",
                    help="after the bench, the job again with every compute pass timed on the GPU (timestamp queries "
                         "in the Worker; tvmjs's own dispatch, a pass per kernel): per decode step GPU busy vs wall, "
                         "and the top kernels -> raw['kernels']")
    ap.add_argument("--kernel-runs", type=int, default=2, help="measured runs per prompt of the --kernels pass")
    ap.add_argument("--kernels-batched", action="store_true",
                    help="with --kernels, the timed pass once more with the engine's batched dispatch (a few passes "
                         "per step: GPU busy and span of the step as the product runs it) and web-llm's own decode "
                         "loop (wall = encode + wait for the id) -> raw['kernels_batched']")
    ap.add_argument("--upstream-dispatch", action="store_true",
                    help="after the bench, the job again with tvmjs's own kernel dispatch (a compute pass, a uniform "
                         "write and a bind group per kernel) instead of the engine's batched one -> variant "
                         "'upstream-dispatch' (the --kernels pass always uses it: a pass per kernel)")
    ap.add_argument("--decode-loop", choices=["async", "sync"], default=None,
                    help="the decode loop of the bench run: the engine's asynchronous one (default) or web-llm's own")
    ap.add_argument("--sync-loop", action="store_true",
                    help="after the bench, the job again with web-llm's own decode loop (it waits for every sampled "
                         "id) instead of the engine's asynchronous read-back -> variant 'sync-loop'")
    ap.add_argument("--gpu-util", action="store_true",
                    help="sample nvidia-smi every 50 ms beside the bench (it slowed decode ~15%% on the H200)")
    ap.add_argument("--gpu-screenshot", action="store_true",
                    help="with each flag set, a screenshot of chrome://gpu to OUT/gpu_<set>.png (what Chromium's GPU "
                         "process made of the machine)")
    args = ap.parse_args(argv)
    device_run.stash(args.staged, args.stage)
    if args.stash_only:
        return 0
    st, out = args.stage, args.out
    out.mkdir(parents=True, exist_ok=True)
    raw: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    logs = args.log_dir or out
    logs.mkdir(parents=True, exist_ok=True)

    def write():
        (out / args.raw_name).write_text(json.dumps(raw, indent=1, default=str))

    prefix = unpack_chrome(st)
    static = args.static or prefix / "static"
    exe = prefix / "chromium" / "chromium"
    env = device_run.vulkan_env(st, args.unpack_debs)
    raw["vulkan"] = json.loads(env.pop("__vulkan"))
    if args.flags == "swiftshader":
        env["VK_ICD_FILENAMES"] = env["VK_DRIVER_FILES"] = str(prefix / "chromium" / "vk_swiftshader_icd.json")
    env = chrome_env(prefix, env)
    raw["nvidia_smi"] = device_run.nvidia_smi()
    raw["chromium"] = subprocess.run([str(exe), "--version"], env=env, capture_output=True, text=True).stdout.strip()
    missing = subprocess.run(["ldd", str(exe)], env=env, capture_output=True, text=True).stdout
    raw["ldd_missing"] = [l.strip() for l in missing.splitlines() if "not found" in l]
    device_run.log(f"{raw['chromium'] or 'chromium --version printed nothing'}; missing libs {raw['ldd_missing']}")
    raw["probes"] = {}
    chosen = None
    for name, flags in FLAG_SETS[args.flags].items():
        if args.gpu_screenshot:
            prof = Path(tempfile.mkdtemp(prefix="wlw-chrome-gpu-"))
            subprocess.run([str(exe), *COMMON, *flags, f"--user-data-dir={prof}", f"--screenshot={out / f'gpu_{name}.png'}",
                            "--window-size=1100,5000", "--virtual-time-budget=4000", "chrome://gpu"], env=env,
                           capture_output=True, timeout=60)
            shutil.rmtree(prof, ignore_errors=True)
        r = attempt(exe, static, None, {"probe_only": True}, flags, env, logs / f"chrome_{name}.log", 60)
        raw["probes"][name] = {k: r.get(k) for k in ("adapter_info", "features", "adapter_limits", "error", "wall_s",
                                                      "user_agent")}
        if r.get("error"):
            raw["probes"][name]["stderr_tail"] = r.get("stderr_tail", "")[-1500:]
        device_run.log(f"probe {name}: {r.get('adapter_info') or r.get('error')}")
        write()
        ai = r.get("adapter_info") or {}
        if ai and (args.flags == "swiftshader" or not ai.get("is_fallback")):
            chosen = name
            break
    raw["flag_set"] = chosen
    if chosen and args.probe_only:
        write()
        return 0
    if chosen:
        manifest = json.loads((st / "manifest.json").read_text())
        job = manifest["jobs"][args.job]
        files = device_run.model_files(st, args.job, job)
        spec = dict(job["job"])
        if args.runs:
            spec["runs"] = args.runs
        if args.max_tokens:
            spec["max_tokens"] = args.max_tokens
        if args.prompts:
            spec["prompts"] = {n: m for n, m in spec["prompts"].items() if n in args.prompts.split(",")}
        if args.decode_loop:
            spec["decode_loop"] = args.decode_loop
        raw["job"] = {"name": args.job, "model": spec["spec"]["id"], "runs": spec["runs"], "warmup": spec.get("warmup"),
                      "max_tokens": spec["max_tokens"], "flags": [*COMMON, *FLAG_SETS[args.flags][chosen]]}
        device_run.log(f"bench {args.job} with flag set {chosen}")
        smi = None
        if args.gpu_util and shutil.which("nvidia-smi"):  # GPU utilization beside the run: busy GPU vs a waiting one
            smi = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,utilization.gpu", "--format=csv,noheader",
                                    "-lms", "50"], stdout=open(st / "gpu_util.csv", "w"), stderr=subprocess.DEVNULL)
        raw["result"] = attempt(exe, static, files, spec, FLAG_SETS[args.flags][chosen], env,
                                logs / f"chrome_{chosen}_bench.log", args.timeout)
        if smi:
            smi.terminate()
            smi.wait(5)
            vals = [int(l.split(",")[1].split()[0]) for l in (st / "gpu_util.csv").read_text().splitlines()
                    if l.count(",") == 1 and l.split(",")[1].split()[:1] and l.split(",")[1].split()[0].isdigit()]
            raw["gpu_util_pct"] = {"samples": len(vals), "mean": sum(vals) / len(vals) if vals else None,
                                   "max": max(vals) if vals else None, "note": "whole bench, load included"}
        device_run.log(f"bench: {raw['result'].get('error') or 'ok'} in {raw['result']['wall_s']} s; "
                       f"gpu util {raw.get('gpu_util_pct')}")
        raw["variants"] = {}
        for v in args.variant:
            name, _, extra = v.partition("=")
            r = attempt(exe, static, files, spec, [*FLAG_SETS[args.flags][chosen], *extra.split(";")], env,
                        st / f"chrome_{name}.log", args.timeout)
            raw["variants"][name] = {"flags": extra.split(";"), "error": r.get("error"),
                                     "stderr_tail": (r.get("stderr_tail") or "")[-1500:] if r.get("error") else None,
                                     "prompts": {n: {k: p.get(k) for k in ("decode_tok_s", "prefill_tok_s", "wall_s",
                                                                           "cpu_s", "cpu_s_by_type", "dispatches")}
                                                 for n, p in (r.get("prompts") or {}).items()}}
            device_run.log(f"variant {name}: " + (r.get("error") or ", ".join(
                f"{n} decode {p['decode_tok_s']['median']:.1f}" for n, p in (r.get("prompts") or {}).items())))
            write()
        for name, page in (("upstream-dispatch", {"dispatch": "upstream"}), ("sync-loop", {"decode_loop": "sync"})):
            if not (args.upstream_dispatch if name == "upstream-dispatch" else args.sync_loop):
                continue
            r = attempt(exe, static, files, dict(spec, **page), FLAG_SETS[args.flags][chosen], env,
                        st / f"chrome_{name}.log", args.timeout)
            raw["variants"][name] = {
                "flags": [], "page": page, "error": r.get("error"), "load": r.get("load"),
                "stderr_tail": (r.get("stderr_tail") or "")[-1500:] if r.get("error") else None,
                "prompts": {n: {k: p.get(k) for k in ("decode_tok_s", "prefill_tok_s", "wall_s", "cpu_s", "cpu_s_by_type",
                                                      "dispatches", "submits")}
                            for n, p in (r.get("prompts") or {}).items()}}
            device_run.log(f"{name}: " + (r.get("error") or ", ".join(
                f"{n} decode {p['decode_tok_s']['median']:.1f}" for n, p in (r.get("prompts") or {}).items())))
            write()
        for key, mode in (("kernels", "upstream"), ("kernels_batched", "batched")):
            if not args.kernels or (mode == "batched" and not args.kernels_batched):
                continue
            # tvmjs's own dispatch, one compute pass per kernel: the pass timestamps then name each kernel
            # (the engine's batched dispatch puts a step's kernels into a few passes: its pass shows the step's
            # GPU busy time and span as the product runs it)
            # both with web-llm's own decode loop: a step then ends when its id is read back, so the Worker's steps
            # are the engine's steps (the asynchronous loop submits the next step before it reads the id, which
            # folds steps together) and a step's wall splits into encode + waiting for its id
            kspec = dict(spec, kernels=True, runs=args.kernel_runs, dispatch=mode, decode_loop="sync")
            kflags = [*FLAG_SETS[args.flags][chosen], *KERNEL_FLAGS]
            r = attempt(exe, static, files, kspec, kflags, env, st / f"chrome_{key}.log", args.timeout)
            k = r.get("kernels") or {}
            raw[key] = dict(k, flags=KERNEL_FLAGS, runs=args.kernel_runs, error=r.get("error"),
                                  stderr_tail=(r.get("stderr_tail") or "")[-1500:] if r.get("error") else None,
                                  prompts={n: {kk: q.get(kk) for kk in ("decode_tok_s", "prefill_tok_s", "wall_s",
                                                                         "completion_tokens", "dispatches")}
                                           for n, q in (r.get("prompts") or {}).items()})
            for n, q in (k.get("per_prompt") or {}).items():
                d = q.get("decode") or {}
                device_run.log(f"{key} {n}: step wall {(d.get('wall_ms') or {}).get('mean')} ms, encode "
                               f"{(d.get('encode_ms') or {}).get('mean')} ms, gpu busy {(d.get('gpu_busy_ms') or {}).get('mean')}"
                               f" ms, span {(d.get('gpu_span_ms') or {}).get('mean')} ms; top "
                               + ", ".join(f"{t['kernel']} {t['ms_per_step']:.3f}" for t in q.get("top_kernels", [])[:4]))
            if r.get("error"):
                device_run.log(f"{key}: {r['error']}")
            write()
    write()
    return 0 if chosen and not raw["result"].get("error") else 1


if __name__ == "__main__":
    sys.exit(main())
