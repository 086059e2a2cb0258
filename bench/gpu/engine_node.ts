// Runs the widget's engine (js/src/engine: host.ts + worker.ts, web-llm and the tvmjs runtime) under Node, on
// Dawn for Node (npm `webgpu`, dawn.node on Vulkan), so a machine with a real GPU and no browser can run the
// same WGSL kernels the widget runs. Bundled by bench/gpu_device.py with esbuild (platform node, CommonJS).
//
//   node engine_node.cjs <job.json> <result.json>
//
// job.json: {"dawn": "<path to dawn.node>", "spec": <ModelSpec>, "files": "<dir of files named by sha256>",
//            "prompts": {"32": [messages...], ...}, "max_tokens": 64, "runs": 3, "warmup": 1}
// Only the transport differs from the page: files come from disk instead of the comm, Cache Storage is a
// small in-memory stand-in, and the worker runs in this thread behind a Worker-shaped object.
import { createRequire } from "node:module";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
// The engine's CPU path reads web-xgrammar and web-tokenizers off globalThis, where their UMD wrappers put them in a
// page; bundled as CommonJS for Node the wrappers export instead, so they are put there by hand (main below).
import * as xgrammarUmd from "../../js/node_modules/@mlc-ai/web-xgrammar/lib/index.js";
import * as tokenizersUmd from "../../js/node_modules/@mlc-ai/web-tokenizers/lib/index.js";

type Job = {
  dawn: string;
  dawn_flags?: string[];
  spec: Record<string, unknown>;
  files: string;
  prompts: Record<string, { role: string; content: string }[]>;
  max_tokens: number;
  runs: number;
  warmup?: number;
};

// -- Cache Storage stand-in (what web-llm's ArtifactCache and model_files.ts call) ----------------------------
class MemCache {
  private entries = new Map<string, { body: Uint8Array; headers: [string, string][] }>();
  private key(req: RequestInfo | URL): string {
    return typeof req === "string" ? req : req instanceof URL ? req.href : req.url;
  }
  async match(req: RequestInfo | URL): Promise<Response | undefined> {
    const e = this.entries.get(this.key(req));
    return e ? new Response(e.body as BodyInit, { headers: e.headers }) : undefined;
  }
  async put(req: RequestInfo | URL, res: Response): Promise<void> {
    const body = new Uint8Array(await res.arrayBuffer());
    this.entries.set(this.key(req), { body, headers: [...res.headers] });
  }
  async add(req: RequestInfo | URL): Promise<void> {
    const res = await fetch(req);
    if (!res.ok) throw new TypeError(`Cache.add: ${this.key(req)} answered HTTP ${res.status}`);
    await this.put(req, res);
  }
  async delete(req: RequestInfo | URL): Promise<boolean> {
    return this.entries.delete(this.key(req));
  }
  async keys(): Promise<Request[]> {
    return [...this.entries.keys()].map((u) => new Request(u));
  }
}
class MemCacheStorage {
  private caches = new Map<string, MemCache>();
  async open(name: string): Promise<MemCache> {
    let c = this.caches.get(name);
    if (!c) this.caches.set(name, (c = new MemCache()));
    return c;
  }
  async has(name: string) {
    return this.caches.has(name);
  }
  async delete(name: string) {
    return this.caches.delete(name);
  }
  async keys() {
    return [...this.caches.keys()];
  }
}

// -- the worker, in this thread -----------------------------------------------------------------------------
// host.ts does `new Worker(blobURL)`; this object stands in for it and hands messages to worker.ts's
// `onmessage` (set on globalThis) asynchronously, as a real worker would.
class InThreadWorker {
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onerror: ((ev: { message: string }) => void) | null = null;
  constructor() {
    const g = globalThis as unknown as Record<string, unknown>;
    g.postMessage = (msg: unknown) => setImmediate(() => this.onmessage?.({ data: msg }));
    import("../../js/src/engine/worker").catch((e) => {
      console.error(`engine worker failed to start: ${e?.stack ?? e}`); // onerror is set only after this returns
      this.onerror?.({ message: String(e?.stack ?? e) });
    });
  }
  postMessage(msg: unknown) {
    const g = globalThis as unknown as { onmessage?: (ev: { data: unknown }) => void };
    setImmediate(() => g.onmessage?.({ data: msg }));
  }
  terminate() {}
}

function summary(xs: number[]) {
  const s = xs.filter((x) => typeof x === "number" && isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return { median: null, min: null, max: null, runs: xs };
  const m = s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  return { median: m, min: s[0], max: s[s.length - 1], runs: xs };
}

async function main() {
  const [jobPath, outPath] = process.argv.slice(2);
  // Dawn's callbacks (adapter, mapAsync, work done) hold no Node handle: without one pending, Node ends the process
  // (exit code 0, nothing written) while the engine waits on the GPU
  setInterval(() => {}, 1000);
  const job: Job = JSON.parse(readFileSync(jobPath, "utf8"));
  const req = createRequire(__filename);
  const dawn = req(job.dawn) as { create(flags: string[]): GPU; globals: Record<string, unknown> };
  const g = globalThis as unknown as Record<string, unknown>;
  Object.assign(g, dawn.globals);
  const gpu = dawn.create(job.dawn_flags ?? []);
  // Node 20 has no navigator; Node 21+ has one without `gpu`.
  if (!g.navigator) g.navigator = {};
  Object.defineProperty(g.navigator as object, "gpu", { value: gpu, configurable: true });
  g.caches = new MemCacheStorage();
  // web-llm reads location.origin (to resolve relative model URLs; ours are absolute); emscripten code under
  // Node takes location.href as its script path, so it must be a file URL.
  // web-llm's bundled tokenizer module calls a bare `createRequire` under Node.
  g.createRequire = createRequire;
  if (!g.location) g.location = { href: pathToFileURL(__filename).href, origin: "https://webllm-widget.invalid" };
  g.Worker = InThreadWorker;
  g.xgrammar ??= xgrammarUmd;
  g.tokenizers ??= tokenizersUmd;
  // Count what the engine asks of the GPU per run: compute dispatches and queue submits (host cost scales with them).
  const counts = { dispatches: 0, submits: 0 };
  const pass = (dawn.globals.GPUComputePassEncoder as { prototype: Record<string, (...a: unknown[]) => unknown> }).prototype;
  const queue = (dawn.globals.GPUQueue as { prototype: Record<string, (...a: unknown[]) => unknown> }).prototype;
  const dispatch = pass.dispatchWorkgroups;
  pass.dispatchWorkgroups = function (this: unknown, ...a: unknown[]) {
    counts.dispatches++;
    return dispatch.apply(this, a);
  };
  const submit = queue.submit;
  queue.submit = function (this: unknown, ...a: unknown[]) {
    counts.submits++;
    return submit.apply(this, a);
  };

  const { sharedEngine } = await import("../../js/src/engine/host");
  const out: Record<string, unknown> = { node: process.version };
  const t0 = performance.now();
  const engine = await sharedEngine(async () => new Blob([""]));
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  const ai = adapter?.info;
  out.adapter_info = ai && { vendor: ai.vendor, architecture: ai.architecture, device: ai.device, description: ai.description };
  out.adapter_limits = adapter && { maxBufferSize: adapter.limits.maxBufferSize,
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize };
  const source = async (f: { name: string; sha256: string }) => new Uint8Array(readFileSync(join(job.files, f.sha256)));
  let lastPhase = "";
  const info = await engine.load(job.spec as never, (p) => {
    if (p.phase !== lastPhase) console.error(`load: ${p.phase} ${p.text}`);
    lastPhase = p.phase;
  }, source as never);
  out.load = { ...info, wall_s: (performance.now() - t0) / 1000 };
  console.error(`loaded ${info.model} on ${info.gpu.description || info.gpu.vendor} (${info.schedule}) in ${(out.load as { wall_s: number }).wall_s.toFixed(1)} s`);
  const prompts: Record<string, unknown> = {};
  for (const [n, messages] of Object.entries(job.prompts)) {
    const rows: Record<string, number | string>[] = [];
    let text = "";
    for (let i = 0; i < (job.warmup ?? 1) + job.runs; i++) {
      await engine.reset();
      const t = performance.now();
      const cpu0 = process.cpuUsage();
      const d0 = counts.dispatches, s0 = counts.submits;
      const r = await engine.generate(messages as never, { temperature: 0, max_tokens: job.max_tokens, ignore_eos: true });
      const wall = (performance.now() - t) / 1000;
      const c = process.cpuUsage(cpu0);
      const cpu = (c.user + c.system) / 1e6; // this process's CPU seconds: near wall_s means the host side limits
      text = r.text;
      if (i < (job.warmup ?? 1)) continue; // first run compiles pipelines and warms the caches
      const u = r.usage;
      rows.push({ wall_s: wall, cpu_s: cpu, dispatches: counts.dispatches - d0, submits: counts.submits - s0, prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens,
        prefill_tok_s: u.prefill_tokens_per_s as number, decode_tok_s: u.decode_tokens_per_s as number,
        ttft_s: u.time_to_first_token_s as number, finish_reason: r.finish_reason });
    }
    const col = (k: string) => rows.map((r) => r[k] as number);
    prompts[n] = {
      prompt_tokens: rows[0]?.prompt_tokens, completion_tokens: rows[0]?.completion_tokens,
      prefill_tok_s: summary(col("prefill_tok_s")), decode_tok_s: summary(col("decode_tok_s")),
      ttft_s: summary(col("ttft_s")), wall_s: summary(col("wall_s")),
      cpu_s: summary(col("cpu_s")), dispatches: rows[0]?.dispatches, submits: rows[0]?.submits, text_head: text.slice(0, 200),
    };
    const p = prompts[n] as { decode_tok_s: { median: number }; prefill_tok_s: { median: number } };
    console.error(`prompt ${n}: prefill ${p.prefill_tok_s.median?.toFixed(1)} tok/s, decode ${p.decode_tok_s.median?.toFixed(1)} tok/s`);
    writeFileSync(outPath, JSON.stringify({ ...out, prompts }, null, 1)); // keep what is done if a later length fails
  }
  out.prompts = prompts;
  out.wall_s = (performance.now() - t0) / 1000;
  writeFileSync(outPath, JSON.stringify(out, null, 1));
  engine.terminate();
  process.exit(0);
}

main().catch((e) => {
  console.error(`engine_node failed: ${e?.code ? `[${e.code}] ` : ""}${e?.stack ?? e}`);
  process.exit(1);
});
