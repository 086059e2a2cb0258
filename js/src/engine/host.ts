// The page side of the engine: starts the worker from a Blob URL, installs model files, and turns the
// worker's messages into the Engine interface. One engine per page, shared by every widget on it; it holds
// several models at once within a memory budget, and every request names the model it is for.
import { cpuBuildLabel, detectCpuBuild, PREFERRED_CPU_BUILD, type CpuBuild } from "./cpu/features";
import { toEngineError } from "./errors";
import { installModelFiles, recordFor } from "./model_files";
import { modelBaseUrl } from "./kv_fit";
import { deleteGroup, isQuotaError, quotaError, recordModel } from "./model_cache";
import {
  EngineError,
  type BlobSource,
  type ChatMessage,
  type Engine,
  type GenerateResult,
  type GenerateSettings,
  type GPUInfo,
  type LoadProgress,
  type LoadResult,
  type ModelSpec,
} from "./types";
import type { FromWorker, ToWorker } from "./wire";
import type { ShaderStats } from "./shaders";

/** A model the page holds (or held, and may load again when a request names it). */
interface Slot {
  key: string;
  spec: ModelSpec;
  source?: BlobSource;
  result: LoadResult;
  /** What the model takes in the page's (GPU or wasm) memory, as estimated from its files. */
  bytes: number;
  lastUsed: number;
  loaded: boolean;
}

/** A model unloaded to make room for another: listeners (the widgets) say so. */
export interface SwapEvent {
  unloaded: { key: string; model: string; bytes: number }[];
  loaded: { key: string; model: string; bytes: number };
  budget_bytes: number;
  text: string;
}

/** How much memory the page lets its models take together, unless the host sets it (setMemoryBudget). */
export function defaultMemoryBudget(): number {
  const gib = Number((globalThis.navigator as Navigator & { deviceMemory?: number })?.deviceMemory) || 8;
  return Math.max(1, gib / 2) * 2 ** 30;
}

const mb = (n: number) => `${(n / 2 ** 20).toFixed(n < 10 * 2 ** 20 ? 1 : 0)} MB`;

interface Pending {
  resolve: (v: any) => void;
  reject: (e: EngineError) => void;
  onProgress?: (p: LoadProgress) => void;
  onDelta?: (d: string) => void;
}

export function specKey(spec: ModelSpec): string {
  return `${spec.id}|${spec.key ?? spec.url ?? (spec.prebuilt ? "prebuilt" : "")}|${spec.device ?? "webgpu"}|${spec.cpu?.key ?? ""}|${spec.webgpu_fallback?.key ?? ""}`;
}

/**
 * A model served over HTTP: one request for its config before web-llm starts, so an unreachable server or a
 * wrong URL is named at once (web-llm itself only says "Request failed"). Skipped when the page's cache has it.
 */
async function checkModelUrl(url: string): Promise<void> {
  const base = /resolve\/main\/?$/.test(url) ? url.replace(/\/?$/, "/") : `${url.replace(/\/?$/, "/")}resolve/main/`;
  const cfg = `${base}mlc-chat-config.json`;
  try {
    if (await (await caches.open("webllm/config")).match(cfg)) return;
  } catch {
    /* no Cache Storage: ask the server */
  }
  let r: Response;
  try {
    r = await fetch(cfg, { cache: "no-store", signal: AbortSignal.timeout(20000) });
  } catch (e) {
    throw new EngineError("unreachable", `cannot reach ${cfg} (${String(e)}): check the URL, that the server is up, ` +
      "and that it allows this page's origin (CORS).", { url: cfg });
  }
  if (!r.ok) {
    throw new EngineError("bad-model", `${cfg} answered HTTP ${r.status}: no web-llm model folder there ` +
      "(it needs mlc-chat-config.json, tensor-cache.json, shards and the library).", { url: cfg, status: r.status });
  }
  // Where web-llm (and the worker's KV cache check) read it: the server is asked for the config once.
  try {
    await (await caches.open("webllm/config")).put(cfg, r);
  } catch {
    /* no Cache Storage: web-llm fetches it again */
  }
}

/**
 * An f16-compute model on an adapter without `shader-f16`: refuse it before a byte is installed or fetched
 * (web-llm would only find out when it asks for the device, after the config has been fetched), naming the
 * f32 variant to use instead. `required_features` and `f32_variant` come from the kernel (models/devices.py).
 */
function checkFeatures(spec: ModelSpec, gpu: GPUInfo | null): void {
  const missing = (spec.required_features ?? []).filter((f) => !(gpu?.features ?? []).includes(f));
  if (!missing.length) return;
  const adapter = gpu ? gpu.description || [gpu.vendor, gpu.architecture].filter(Boolean).join(" ") : "none";
  const instead = spec.f32_variant
    ? (spec.prebuilt ? `use ${spec.f32_variant} (f32 compute) instead`
      : `rebuild it with quantization ${spec.f32_variant} (f32 compute), e.g. \`webllm-widget build --quantization ${spec.f32_variant}\``)
    : "use a q4f32_1 (f32-compute) model instead";
  throw new EngineError(
    missing.includes("shader-f16") ? "no-shader-f16" : "bad-model",
    `${spec.id} computes in float16 and needs the WebGPU feature(s) ${missing.join(", ")}, which this GPU ` +
      `(${adapter}) does not offer: ${instead}. Nothing was downloaded.`,
    { missing_features: missing, f32_variant: spec.f32_variant ?? null, adapter_features: gpu?.features ?? [] },
  );
}

/**
 * A CPU spec narrowed to the library build this page runs (PREFERRED_CPU_BUILD where the page's WebAssembly
 * validates it and the model has it, else SIMD128), the other build's file dropped so it is never copied in; the
 * reason says which build and why.
 */
export function withCpuBuild(spec: ModelSpec, reason: string): { device: "cpu"; reason: string; spec: ModelSpec; cpu_build: CpuBuild } {
  const build = detectCpuBuild();
  if (build === null) {
    throw new EngineError("bad-model", "this browser's WebAssembly has no SIMD, which the CPU path needs: use a browser " +
      "from 2021 or later (Chrome 91, Firefox 89, Safari 16.4), or WebGPU.");
  }
  const relaxed = spec.lib_relaxed_simd;
  const wantRelaxed = PREFERRED_CPU_BUILD === "relaxed-simd";
  const use = wantRelaxed && build === "relaxed-simd" && relaxed ? relaxed : spec.lib;
  const drop = use === relaxed ? spec.lib : relaxed;
  const files = spec.files?.filter((f) => f.name !== drop);
  const cpu_build: CpuBuild = use === relaxed && relaxed ? "relaxed-simd" : "simd128";
  const why = cpu_build === "relaxed-simd" ? "relaxed SIMD available"
    : build !== "relaxed-simd" ? "no relaxed SIMD in this browser"
      : !wantRelaxed ? "relaxed SIMD available, but the SIMD128 build measured faster"
        : "this model has no relaxed-SIMD build";
  return { device: "cpu", reason: `${reason}; ${cpuBuildLabel(cpu_build)} (${why})`,
    spec: { ...spec, lib: use, files, lib_relaxed_simd: undefined }, cpu_build };
}

export class WorkerEngine implements Engine {
  /** The model loaded last (requests that name no model go to it). */
  loaded: string | null = null;
  gpu: GPUInfo | null = null;
  /** Bytes the models held at once may take together; past it, the least recently used one is unloaded. */
  memoryBudget: number = defaultMemoryBudget();
  private worker: Worker;
  private nextId = 1;
  private pending = new Map<number, Pending>();
  private hello: Promise<void>;
  // Loads and generations run one at a time, in the order asked (several widgets share this engine).
  private chain: Promise<unknown> = Promise.resolve();
  private slots = new Map<string, Slot>();
  private lastKey: string | null = null;
  private loading: { key: string; promise: Promise<LoadResult>; listeners: Set<(p: LoadProgress) => void> } | null = null;
  private running: number | null = null;
  private swapListeners = new Set<(e: SwapEvent) => void>();
  private clock = 0;

  constructor(workerBundle: Blob) {
    const url = URL.createObjectURL(workerBundle);
    this.worker = new Worker(url, { name: "webllm-widget-engine" });
    let helloResolve!: () => void;
    this.hello = new Promise((r) => (helloResolve = r));
    this.worker.onmessage = (ev: MessageEvent<FromWorker>) => {
      if (ev.data.type === "hello") {
        URL.revokeObjectURL(url);
        helloResolve();
        return;
      }
      this.onMessage(ev.data);
    };
    this.worker.onerror = (ev) => {
      const err = new EngineError("bad-artifact", `the engine worker failed to start or crashed: ${ev.message}`);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
  }

  private onMessage(msg: Exclude<FromWorker, { type: "hello" }>) {
    const p = this.pending.get(msg.id);
    if (!p) return;
    switch (msg.type) {
      case "progress":
        p.onProgress?.(msg.progress);
        return;
      case "delta":
        p.onDelta?.(msg.text);
        return;
      case "error":
        this.pending.delete(msg.id);
        p.reject(new EngineError(msg.code, msg.message, msg.detail ?? {}));
        return;
      default:
        this.pending.delete(msg.id);
        p.resolve(msg);
    }
  }

  private async call<T>(
    msg: Omit<ToWorker, "id"> & { type: ToWorker["type"] },
    hooks: Omit<Pending, "resolve" | "reject"> = {},
    id: number = this.nextId++,
  ): Promise<T> {
    await this.hello;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, ...hooks });
      this.worker.postMessage({ ...msg, id } as ToWorker);
    });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** The adapter the worker sees; rejects with no-webgpu when there is none. */
  async probe(): Promise<GPUInfo> {
    const r = await this.call<{ gpu: GPUInfo }>({ type: "gpu" });
    this.gpu = r.gpu;
    return r.gpu;
  }

  /**
   * Which engine runs `spec`: "cpu" and "webgpu" as asked; "auto" takes WebGPU on a hardware adapter
   * and the CPU build (`spec.cpu`) when there is no adapter or it is a software fallback (SwiftShader: the
   * CPU's SIMD kernels are ~10x faster there).
   */
  async chooseDevice(spec: ModelSpec): Promise<{ device: "webgpu" | "cpu"; reason: string; spec: ModelSpec; cpu_build?: CpuBuild }> {
    const choice = await this.chooseEngine(spec);
    return choice.device === "cpu" ? withCpuBuild(choice.spec, choice.reason) : choice;
  }

  private async chooseEngine(spec: ModelSpec): Promise<{ device: "webgpu" | "cpu"; reason: string; spec: ModelSpec }> {
    const want = spec.device ?? "webgpu";
    if (want === "cpu") return { device: "cpu", reason: "device='cpu' was asked for", spec: spec.cpu ?? spec };
    let info: GPUInfo | null = null;
    let why = "";
    try {
      info = this.gpu ?? (await this.probe());
    } catch (e) {
      why = toEngineError(e).message;
    }
    const label = info ? (info.description || [info.vendor, info.architecture].filter(Boolean).join(" ") || "unknown adapter") : "";
    if (want === "auto" && spec.cpu) {
      if (!info) return { device: "cpu", reason: `no WebGPU adapter (${why})`, spec: spec.cpu };
      if (info.is_fallback) {
        return { device: "cpu", reason: `the WebGPU adapter (${label}) is a software fallback; the CPU runs this model faster`, spec: spec.cpu };
      }
      if (spec.webgpu === false) return { device: "cpu", reason: `this model was built for the CPU only (adapter: ${label})`, spec: spec.cpu };
      return { device: "webgpu", reason: `hardware WebGPU adapter (${label})`, spec };
    }
    if (!info) throw new EngineError("no-webgpu", why || "WebGPU is not available in this page");
    const reason = want === "webgpu" ? "device='webgpu' was asked for" : info.is_fallback
      ? `software WebGPU adapter (${label}); this model has no CPU build` : `hardware WebGPU adapter (${label})`;
    // Same weights, kernels scheduled for a software adapter (~4x faster decode on SwiftShader).
    if (info.is_fallback && spec.webgpu_fallback) {
      return { device: "webgpu", reason: `${reason}; software adapter: the library built for it (schedule "fallback")`, spec: spec.webgpu_fallback };
    }
    return { device: "webgpu", reason, spec };
  }

  /** Sets the memory budget (bytes); models over it are unloaded at the next load. */
  setMemoryBudget(bytes: number | null | undefined): void {
    this.memoryBudget = bytes && bytes > 0 ? bytes : defaultMemoryBudget();
  }

  /** Called whenever models are unloaded to make room for another. Returns a function that removes it. */
  onSwap(fn: (e: SwapEvent) => void): () => void {
    this.swapListeners.add(fn);
    return () => this.swapListeners.delete(fn);
  }

  /** The models the page holds now: key, model id, estimated bytes, and the budget. */
  held(): { models: { key: string; model: string; bytes: number; device?: string }[]; budget_bytes: number; used_bytes: number } {
    const models = [...this.slots.values()].filter((s) => s.loaded)
      .map((s) => ({ key: s.key, model: s.result.model, bytes: s.bytes, device: s.result.device }));
    return { models, budget_bytes: this.memoryBudget, used_bytes: models.reduce((n, m) => n + m.bytes, 0) };
  }

  /** Whether the model of `spec` (or key) is loaded in the page now. */
  isLoaded(spec: ModelSpec | string): boolean {
    return Boolean(this.slots.get(typeof spec === "string" ? spec : specKey(spec))?.loaded);
  }

  /** `source` delivers the bytes of local model files the page's cache lacks (the caller's transport). */
  load(spec: ModelSpec, onProgress?: (p: LoadProgress) => void, source?: BlobSource): Promise<LoadResult> {
    const key = specKey(spec);
    const held = this.slots.get(key);
    if (held?.loaded && !(this.loading && this.loading.key === key)) {
      held.lastUsed = ++this.clock;
      this.lastKey = key;
      this.loaded = held.result.model;
      onProgress?.({ progress: 1, phase: "done", elapsed_s: 0, text: `${spec.id} is already loaded on this page` });
      return Promise.resolve({ ...held.result, bytes_installed: 0 });
    }
    if (this.loading && this.loading.key === key) {
      if (onProgress) this.loading.listeners.add(onProgress);
      return this.loading.promise;
    }
    const listeners = new Set<(p: LoadProgress) => void>();
    if (onProgress) listeners.add(onProgress);
    const emit = (p: LoadProgress) => listeners.forEach((l) => l(p));
    const promise = this.serial(async () => {
      try {
        return await this.loadNow(spec, emit, source);
      } finally {
        this.loading = null;
      }
    });
    this.loading = { key, promise, listeners };
    return promise;
  }

  /** Loads `spec` into the worker (not serialized: callers hold the chain). */
  private async loadNow(spec: ModelSpec, emit: (p: LoadProgress) => void, source?: BlobSource): Promise<LoadResult> {
    const key = specKey(spec);
    const t0 = performance.now();
    let installed = 0;
    try {
      // Pick the engine first (no adapter and no CPU build: say so before any model byte is copied).
      const choice = await this.chooseDevice(spec);
      const requested = spec;
      spec = choice.spec;
      if (choice.device === "webgpu") checkFeatures(spec, this.gpu);
      const bytes = (spec.files ?? []).reduce((n, f) => n + f.size, 0);
      if (spec.files) {
        if (!source) throw new EngineError("bad-model", "this host cannot deliver local model files");
        emit({ progress: 0, phase: "install", bytes_done: 0, bytes_total: bytes, elapsed_s: 0, text: "checking the page's cache" });
        installed = await installModelFiles(spec, source, (ip) => {
          const elapsed_s = (performance.now() - t0) / 1000;
          const frac = ip.bytes_total ? ip.bytes_done / ip.bytes_total : 1;
          emit({
            progress: frac,
            phase: "install",
            bytes_done: ip.bytes_done,
            bytes_total: ip.bytes_total,
            elapsed_s,
            eta_s: frac > 0 ? (elapsed_s * (1 - frac)) / frac : undefined,
            text: `copying ${ip.file} into the page (${ip.files_done}/${ip.files_total})`,
          });
        });
      }
      if (spec.url && !spec.files) await checkModelUrl(spec.url);
      await this.makeRoom(key, requested.id, bytes, emit, t0);
      // a page may ask for tvmjs's own kernel dispatch (the GPU bench compares both): window.__webllmWidgetDispatch
      const dispatch = (globalThis as { __webllmWidgetDispatch?: "batched" | "upstream" }).__webllmWidgetDispatch;
      // and more kernels to compile on first use (tests of that path): window.__webllmWidgetDeferShaders
      const deferShaders = (globalThis as { __webllmWidgetDeferShaders?: string[] }).__webllmWidgetDeferShaders;
      const r = await this.call<{ model: string; gpu: GPUInfo; load_s: number; bytes?: number; dispatch?: string; decode_loop?: string;
        prompt_cache?: string; shaders?: ShaderStats }>(
        { type: "load", key, model_id: spec.id, record: recordFor(spec), device: choice.device, dispatch,
          defer_shaders: deferShaders } as Omit<ToWorker, "id">,
        { onProgress: emit },
      );
      this.gpu = r.gpu;
      const result: LoadResult = {
        model: r.model, gpu: r.gpu, load_s: (performance.now() - t0) / 1000, bytes_installed: installed,
        device: choice.device, device_reason: choice.reason, cpu_build: choice.cpu_build,
        schedule: choice.device === "webgpu" ? spec.schedule : undefined,
        dispatch: r.dispatch,
        ...(r.decode_loop ? { decode_loop: r.decode_loop } : {}),
        ...(r.prompt_cache ? { prompt_cache: r.prompt_cache } : {}),
        ...(r.shaders ? { shaders: r.shaders } : {}),
      };
      if (spec.prebuilt && spec.hub) {
        await recordModel({ id: spec.id, url: modelBaseUrl(spec.hub.model), kind: "prebuilt", lib_url: spec.hub.model_lib ?? undefined });
      }
      const slot: Slot = { key, spec: requested, source, result, bytes: bytes || r.bytes || 0, lastUsed: ++this.clock, loaded: true };
      this.slots.set(key, slot);
      this.lastKey = key;
      this.loaded = r.model;
      if (!bytes && slot.bytes) await this.makeRoom(key, requested.id, 0, emit, t0); // learnt its size only now
      emit({ progress: 1, phase: "done", elapsed_s: result.load_s, text: `loaded ${requested.id} on ${choice.device === "cpu" ? "the CPU" : "WebGPU"}` });
      return result;
    } catch (e) {
      // A failed load leaves the worker without this model (the others stay).
      const slot = this.slots.get(key);
      if (slot) slot.loaded = false;
      if (this.lastKey === key) {
        this.lastKey = null;
        this.loaded = null;
      }
      if (spec.prebuilt && spec.hub && (isQuotaError(e) || toEngineError(e).code === "storage-quota")) {
        // web-llm stored part of the model before the quota stopped it: none of it stays.
        const base = modelBaseUrl(spec.hub.model);
        await deleteGroup(base, spec.hub.model_lib ?? undefined);
        throw await quotaError(spec.id, null, base);
      }
      throw toEngineError(e);
    }
  }

  /**
   * Unloads the least recently used models until `bytes` more fit the budget (never `key` itself). Says so
   * through `emit` (the asking widget's progress) and the swap listeners (every widget whose model went).
   */
  private async makeRoom(key: string, modelId: string, bytes: number, emit: (p: LoadProgress) => void, t0: number): Promise<void> {
    const others = () => [...this.slots.values()].filter((s) => s.loaded && s.key !== key).sort((a, b) => a.lastUsed - b.lastUsed);
    const used = () => others().reduce((n, s) => n + s.bytes, 0) + (this.slots.get(key)?.loaded ? this.slots.get(key)!.bytes : bytes);
    const gone: Slot[] = [];
    while (used() > this.memoryBudget && others().length) {
      const victim = others()[0];
      emit({ progress: 0, phase: "load", elapsed_s: (performance.now() - t0) / 1000,
        text: `swapping models: unloading ${victim.result.model} (${mb(victim.bytes)}) to make room for ${modelId} (memory budget ${mb(this.memoryBudget)})` });
      await this.call({ type: "unload", key: victim.key } as Omit<ToWorker, "id">);
      victim.loaded = false;
      gone.push(victim);
    }
    if (!gone.length) return;
    const event: SwapEvent = {
      unloaded: gone.map((s) => ({ key: s.key, model: s.result.model, bytes: s.bytes })),
      loaded: { key, model: modelId, bytes: bytes || (this.slots.get(key)?.bytes ?? 0) },
      budget_bytes: this.memoryBudget,
      text: `unloaded ${gone.map((s) => s.result.model).join(", ")} to make room for ${modelId} ` +
        `(memory budget ${mb(this.memoryBudget)}); ${gone.length > 1 ? "they load" : "it loads"} again when asked`,
    };
    this.swapListeners.forEach((l) => l(event));
  }

  /**
   * Generates with the model `model` names (a spec, or a key from specKey; default: the model loaded last).
   * A model unloaded to make room for another is loaded again first, and `onProgress` says so.
   */
  generate(
    messages: ChatMessage[],
    settings: GenerateSettings,
    onDelta?: (delta: string) => void,
    signal?: AbortSignal,
    model?: ModelSpec | string,
    onProgress?: (p: LoadProgress) => void,
  ): Promise<GenerateResult> {
    return this.serial(async () => {
      if (signal?.aborted) {
        return { text: "", finish_reason: "abort", usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 } };
      }
      const key = model === undefined ? this.lastKey : typeof model === "string" ? model : specKey(model);
      const slot = key ? this.slots.get(key) : undefined;
      if (!key || !slot) {
        throw new EngineError("bad-model", model === undefined ? "no model is loaded: load one first"
          : `the model this request is for (${typeof model === "string" ? model.split("|")[0] : model.id}) was never loaded on this page: load it first`);
      }
      let swapped: LoadResult | null = null;
      if (!slot.loaded) {
        // Unloaded to make room for another model: load it again (from the page's cache), visibly.
        const t0 = performance.now();
        onProgress?.({ progress: 0, phase: "load", elapsed_s: 0, text: `loading ${slot.result.model} again (it was unloaded to make room for another model)` });
        swapped = await this.loadNow(slot.spec, (p) => onProgress?.(p), slot.source);
        onProgress?.({ progress: 1, phase: "done", elapsed_s: (performance.now() - t0) / 1000, text: `loaded ${slot.result.model} again` });
      }
      slot.lastUsed = ++this.clock;
      const id = this.nextId++;
      const onAbort = () => this.stopId(id);
      signal?.addEventListener("abort", onAbort);
      this.running = id;
      try {
        // a page may ask for web-llm's own decode loop (tests and the GPU bench compare both): window.__webllmWidgetDecodeLoop
        const loop = (globalThis as { __webllmWidgetDecodeLoop?: "async" | "sync" }).__webllmWidgetDecodeLoop;
        // and web-llm's clearing of the KV cache between requests (bench/prompt_cache.py): window.__webllmWidgetPromptCache
        const cache = (globalThis as { __webllmWidgetPromptCache?: "on" | "off" }).__webllmWidgetPromptCache;
        const r = await this.call<GenerateResult>({ type: "generate", key, messages, settings, decode_loop: loop, prompt_cache: cache } as Omit<ToWorker, "id">,
          { onDelta }, id);
        const out: GenerateResult = { text: r.text, finish_reason: r.finish_reason, usage: r.usage, model: slot.result.model };
        if (r.choices) out.choices = r.choices;
        if (r.dispatch_stats) out.dispatch_stats = r.dispatch_stats;
        if (r.shaders) out.shaders = r.shaders;
        if (swapped) out.reloaded = { load_s: swapped.load_s };
        return out;
      } finally {
        this.running = null;
        signal?.removeEventListener("abort", onAbort);
      }
    });
  }

  private stopId(id: number) {
    if (this.running === id) this.worker.postMessage({ type: "stop", id } as ToWorker);
  }

  stop(): void {
    if (this.running !== null) this.stopId(this.running);
  }

  /** Forgets the KV cache of the model `model` names (default: every model's). */
  async reset(model?: ModelSpec | string): Promise<void> {
    const key = model === undefined ? undefined : typeof model === "string" ? model : specKey(model);
    await this.serial(() => this.call({ type: "reset", key } as Omit<ToWorker, "id">));
  }

  terminate(): void {
    this.worker.terminate();
  }
}

const GLOBAL_KEY = "__webllm_widget_engine__";

/**
 * The page's one engine. Every widget asks here, so a model loaded by one Chat is reused by the next
 * instead of being loaded (and held in GPU memory) twice.
 */
export function sharedEngine(workerBundle: () => Promise<Blob>): Promise<WorkerEngine> {
  const g = globalThis as unknown as Record<string, Promise<WorkerEngine> | undefined>;
  let p = g[GLOBAL_KEY];
  if (!p) {
    p = workerBundle().then((b) => new WorkerEngine(b));
    g[GLOBAL_KEY] = p;
    p.catch(() => (g[GLOBAL_KEY] = undefined));
  }
  return p;
}

export { EngineError } from "./types";
export type * from "./types";
