// What the model picker tells of each model before it is picked: download size, the memory it needs, whether it
// is cached in this browser, and whether this page's adapter can run it (and on what). The kernel sends what it
// knows of the files (models/picker.py); this module adds what only the page knows: its adapter (the same probe
// the engine uses), its Cache Storage, and, for prebuilt ids once the picker is opened, the model's config and
// tensor list from where web-llm fetches them (read from Cache Storage when cached there).
import { probeGPU } from "../engine/adapter";
import { bufferLimit, configUrlFor, kvCacheNeed, modelBaseUrl, WASM32_BUFFER_LIMIT } from "../engine/kv_fit";
import { baseUrlFor, scopeFor } from "../engine/model_files";
import type { GPUInfo, ModelFile, ModelSpec } from "../engine/types";
import type { ModelEntry } from "./chat_view";

/** One build of a local model (models/picker.py `_variant`). */
export interface Variant {
  device: "webgpu" | "cpu";
  schedule?: string | null;
  key: string;
  lib: string;
  files: { name: string; size: number }[];
  size_bytes: number;
  weights_bytes: number;
  max_param_bytes: number;
  kv: Record<string, any>;
  required_features?: string[];
}

/** A picker entry as the kernel sends it. */
export interface PickerEntry {
  id: string;
  label?: string;
  kind?: "builtin" | "folder" | "prebuilt" | "url";
  device?: string;
  variants?: Variant[];
  vram_MB?: number | null;
  model?: string;
  model_lib?: string;
  required_features?: string[];
  overrides?: Record<string, unknown>;
  facts_error?: string;
}

/** The adapter this page offers (null: none), asked once per page. */
export function pageAdapter(): Promise<GPUInfo | null> {
  const g = globalThis as unknown as { __webllmWidgetAdapter?: Promise<GPUInfo | null> };
  if (!g.__webllmWidgetAdapter) g.__webllmWidgetAdapter = probeGPU(navigator).catch(() => null);
  return g.__webllmWidgetAdapter;
}

const mb = (n: number) => `${(n / 2 ** 20).toFixed(n < 10 * 2 ** 20 ? 1 : 0)} MB`;
const adapterName = (g: GPUInfo) => g.description || [g.vendor, g.architecture].filter(Boolean).join(" ") || "this GPU";

/**
 * The build the engine would load for `requested` ("auto" | "webgpu" | "cpu") on `gpu`, as host.ts chooseDevice
 * does: "auto" takes the CPU build when there is no adapter or it is a software one; a software adapter gets the
 * library built for it.
 */
export function chooseVariant(variants: Variant[], requested: string, gpu: GPUInfo | null): Variant | null {
  const cpu = variants.find((v) => v.device === "cpu");
  const gpuBuilds = variants.filter((v) => v.device === "webgpu");
  if (requested === "cpu") return cpu ?? null;
  if (requested === "auto" && cpu && (!gpu || gpu.is_fallback || !gpuBuilds.length)) return cpu;
  if (!gpuBuilds.length) return null;
  if (gpu?.is_fallback) return gpuBuilds.find((v) => v.schedule === "fallback") ?? gpuBuilds[0];
  return gpuBuilds.find((v) => v.schedule !== "fallback") ?? gpuBuilds[0];
}

async function inCache(scope: string, url: string): Promise<boolean> {
  try {
    if (!(await caches.has(scope))) return false;
    return Boolean(await (await caches.open(scope)).match(url));
  } catch {
    return false;
  }
}

/** Whether every file of a local build is where web-llm reads it (model_files.ts puts them there). */
export async function variantCached(v: Variant): Promise<boolean> {
  const spec = { id: "", key: v.key, lib: v.lib } as ModelSpec;
  const base = baseUrlFor(spec);
  for (const f of v.files) {
    if (!(await inCache(scopeFor(spec, f as ModelFile), base + f.name))) return false;
  }
  return v.files.length > 0;
}


/** What is known of a prebuilt model from its tensor list and config (Cache Storage, else the network). */
export interface PrebuiltLookup {
  weights_bytes?: number;
  max_param_bytes?: number;
  config?: Record<string, any>;
  cached: boolean;
  /** Why the size is unknown (offline, not looked up yet). */
  missing?: string;
}

async function readJson(scope: string, url: string, network: boolean): Promise<Record<string, any> | null> {
  try {
    if (await caches.has(scope)) {
      const hit = await (await caches.open(scope)).match(url);
      if (hit) return await hit.json();
    }
  } catch {
    /* no Cache Storage: ask the server */
  }
  if (!network) return null;
  const r = await fetch(url, { signal: AbortSignal.timeout(20000) });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return await r.json();
}

/** Sizes from a tensor list (tensor-cache.json): all shards, and the largest single weight (one GPU buffer). */
export function tensorSizes(tc: Record<string, any>): { weights_bytes: number; max_param_bytes: number; shards: string[] } {
  let weights = 0;
  let maxParam = 0;
  const shards: string[] = [];
  for (const shard of (tc.records ?? []) as Record<string, any>[]) {
    weights += Number(shard.nbytes ?? 0);
    shards.push(String(shard.dataPath));
    for (const r of (shard.records ?? []) as Record<string, any>[]) maxParam = Math.max(maxParam, Number(r.nbytes ?? 0));
  }
  return { weights_bytes: weights, max_param_bytes: maxParam, shards };
}

/** A prebuilt model: cached when its tensor list, every shard and its library are in web-llm's caches. */
export async function lookupPrebuilt(e: PickerEntry, network: boolean): Promise<PrebuiltLookup> {
  if (!e.model) return { cached: false, missing: "unknown model URL" };
  const base = modelBaseUrl(e.model);
  const out: PrebuiltLookup = { cached: false };
  let tc: Record<string, any> | null = null;
  try {
    tc = await readJson("webllm/model", base + "tensor-cache.json", network);
  } catch (err) {
    out.missing = `size unknown: ${String((err as Error)?.message ?? err).slice(0, 120)}`;
  }
  if (tc) {
    const s = tensorSizes(tc);
    out.weights_bytes = s.weights_bytes;
    out.max_param_bytes = s.max_param_bytes;
    out.cached = (await inCache("webllm/model", base + "tensor-cache.json"))
      && (!e.model_lib || (await inCache("webllm/wasm", e.model_lib)));
    for (const shard of s.shards) {
      if (!out.cached) break;
      out.cached = await inCache("webllm/model", new URL(shard, base).href);
    }
  } else if (!out.missing) {
    out.missing = "size shown once the picker is opened (asks the model's host)";
  }
  try {
    const cfg = await readJson("webllm/config", configUrlFor(e.model), network && !!tc);
    if (cfg) out.config = { ...cfg, ...(e.overrides ?? {}) };
  } catch {
    /* the KV cache check waits for the config */
  }
  return out;
}

/** Whether `gpu` can run a build needing `features`, buffers of `maxParam` bytes and this KV cache. */
export function fitOnGpu(gpu: GPUInfo | null, features: string[], maxParam: number | undefined,
                         cfg: Record<string, any> | undefined): { fits: boolean | null; why: string } {
  if (!gpu) return { fits: false, why: "this browser offers no WebGPU adapter and the model has no CPU build" };
  const missing = features.filter((f) => !gpu.features.includes(f));
  if (missing.length) return { fits: false, why: `needs ${missing.join(", ")}, which ${adapterName(gpu)} lacks (pick a q4f32 model)` };
  const [which, limit] = bufferLimit(gpu);
  if (maxParam && maxParam > limit) {
    return { fits: false, why: `its largest weight (${mb(maxParam)}) is more than one GPU buffer holds here (${mb(limit)}, ${which})` };
  }
  const kv = cfg ? kvCacheNeed(cfg) : null;
  if (kv && kv.per_layer_bytes > limit) {
    return { fits: false, why: `its KV cache needs ${mb(kv.per_layer_bytes)} per layer, more than one GPU buffer holds here (${mb(limit)}, ${which})` };
  }
  if (!cfg || !maxParam) return { fits: null, why: "not known until the picker is opened" };
  return { fits: true, why: `runs on WebGPU (${adapterName(gpu)})` };
}

/** Everything the picker shows for one entry. */
export async function describeEntry(e: PickerEntry, requested: string, gpu: GPUInfo | null, network: boolean): Promise<ModelEntry> {
  const out: ModelEntry = { id: e.id, label: e.label };
  if (e.facts_error) out.why = e.facts_error;
  if (e.variants?.length) {
    const v = chooseVariant(e.variants, e.device ?? requested, gpu);
    if (!v) {
      out.fits = false;
      out.why = requested === "cpu" ? "no CPU build of this model" : "no WebGPU build of this model";
      return out;
    }
    const kv = kvCacheNeed(v.kv ?? {});
    out.size_bytes = v.size_bytes;
    out.vram_MB = (v.weights_bytes + (kv ? kv.per_layer_bytes * kv.layers : 0)) / 2 ** 20;
    out.device = v.device;
    out.cached = await variantCached(v);
    if (v.device === "cpu") {
      const need = out.vram_MB * 2 ** 20;
      out.fits = need < WASM32_BUFFER_LIMIT;
      out.why = out.fits ? `runs on the CPU (${gpu ? "software GPU adapter" : "no WebGPU adapter"})`
        : `needs ${mb(need)} of page memory, more than a wasm32 page can address (4 GiB)`;
    } else {
      const f = fitOnGpu(gpu, v.required_features ?? [], v.max_param_bytes, v.kv);
      out.fits = f.fits;
      out.why = f.fits && v.schedule === "fallback" ? `${f.why}, kernels for software adapters` : f.why;
    }
    return out;
  }
  if (e.kind === "prebuilt") {
    const p = await lookupPrebuilt(e, network);
    out.vram_MB = e.vram_MB ?? null;
    out.size_bytes = p.weights_bytes ?? null;
    out.size_note = p.weights_bytes !== undefined ? "weights" : p.missing;
    out.cached = p.cached;
    out.device = "webgpu";
    const f = fitOnGpu(gpu, e.required_features ?? [], p.max_param_bytes, p.config);
    out.fits = f.fits;
    out.why = f.why;
    return out;
  }
  return out;
}
