// Refuses a model whose KV cache cannot be one GPU buffer per layer, before web-llm allocates anything.
// Used by the worker for every WebGPU load (local folder, URL, prebuilt id): it reads the same
// mlc-chat-config.json web-llm will read, with the model record's overrides on top.
import { EngineError } from "./types";

/** TVM's paged KV cache (0.27): pages of 16 tokens, one more page than the capacity needs (paged_kv_cache.cc). */
const PAGE = 16;
/**
 * The wasm32 runtime sizes buffers with a 32-bit size_t: 2^32 bytes wraps to 0 (a KV cache of 2^32 + one page
 * became an 8 KiB buffer, and the model "loaded" and answered garbage). No buffer may reach it.
 */
export const WASM32_BUFFER_LIMIT = 2 ** 32 - 1;

export interface GpuLimits {
  max_buffer_size?: number;
  max_storage_buffer_binding_size?: number;
}

/** What one layer's KV cache buffer holds for this config, or null when the config does not say. */
export function kvCacheNeed(cfg: Record<string, any>): {
  per_layer_bytes: number; tokens: number; token_bytes: number; window: "context_window_size" | "sliding_window_size"; layers: number;
} | null {
  const mc = (cfg.model_config ?? {}) as Record<string, number>;
  const num = (x: unknown) => (x === undefined || x === null ? NaN : Number(x));
  const sliding = num(cfg.sliding_window_size ?? mc.sliding_window_size);
  const context = num(cfg.context_window_size ?? mc.context_window_size);
  // web-llm sizes the cache by the sliding window when one is set, else by the context window
  const useSliding = Number.isFinite(sliding) && sliding > 0 && !(context > 0);
  const tokens = useSliding ? sliding : context;
  const layers = num(mc.num_hidden_layers);
  const kvHeads = num(mc.num_key_value_heads ?? mc.num_attention_heads);
  const headDim = num(mc.head_dim ?? mc.hidden_size / mc.num_attention_heads);
  if (![tokens, layers, kvHeads, headDim].every((x) => Number.isFinite(x) && x > 0)) return null;
  const elem = /f16/.test(String(cfg.quantization ?? "")) ? 2 : 4;
  const token_bytes = 2 * kvHeads * headDim * elem; // K and V
  const pages = Math.ceil(tokens / PAGE) + 1;
  return { per_layer_bytes: pages * PAGE * token_bytes, tokens, token_bytes, window: useSliding ? "sliding_window_size" : "context_window_size", layers };
}

/** The largest one GPU buffer may be here, and which limit says so (the adapter's two, or the wasm32 runtime's). */
export function bufferLimit(gpu: GpuLimits | null): [string, number] {
  const limits: [string, number][] = [["WebGPU maxBufferSize", gpu?.max_buffer_size ?? Infinity],
    ["WebGPU maxStorageBufferBindingSize", gpu?.max_storage_buffer_binding_size ?? Infinity],
    ["the wasm32 runtime's 32-bit buffer size", WASM32_BUFFER_LIMIT]];
  return limits.reduce((a, b) => (b[1] < a[1] ? b : a));
}

/**
 * Throws `out-of-memory` when one layer's KV cache is larger than the adapter allows for one buffer
 * (maxBufferSize, maxStorageBufferBindingSize: the attention kernels bind it whole) or than the wasm32 runtime
 * can size (just under 4 GiB). WebGPU would otherwise report an uncaptured error or lose the device, or the
 * size would wrap and the model would compute on a tiny buffer.
 */
export function checkKvCacheFits(modelId: string, cfg: Record<string, any>, gpu: GpuLimits | null): void {
  const need = kvCacheNeed(cfg);
  if (!need) return;
  const [which, limit] = bufferLimit(gpu);
  if (need.per_layer_bytes <= limit) return;
  const fits = Math.max(0, (Math.floor(limit / (PAGE * need.token_bytes)) - 1) * PAGE);
  const gib = (n: number) => `${(n / 2 ** 30).toFixed(2)} GiB`;
  throw new EngineError(
    "out-of-memory",
    `${modelId}: its KV cache needs ${gib(need.per_layer_bytes)} per layer for ${need.window} = ${need.tokens} tokens, ` +
      `more than one buffer can hold here (${gib(limit)}, ${which}). Set context_window_size in the model's ` +
      `mlc-chat-config.json to at most ${fits} tokens, or use a sliding window (sliding_window_size at most ${fits}, ` +
      `context_window_size -1, attention_sink_size 0 or more), or pick a smaller model. Nothing was loaded.`,
    {
      needed_bytes: need.per_layer_bytes, limit_bytes: limit, limit_name: which,
      max_buffer_size: gpu?.max_buffer_size ?? null, [need.window]: need.tokens, max_tokens: fits, layers: need.layers,
      before_load: true, // nothing was touched: the model loaded before stays loaded
    },
  );
}

/** A model URL as web-llm reads files under it: with `resolve/main/` added unless it has a `resolve/<rev>/` already. */
export function modelBaseUrl(modelUrl: string): string {
  let u = modelUrl.endsWith("/") ? modelUrl : `${modelUrl}/`;
  if (!/.+\/resolve\/.+\//.test(u)) u += "resolve/main/";
  return new URL(u).href;
}

/** The URL web-llm reads a model's config from (its model URL with `resolve/main/` added, as web-llm does). */
export function configUrlFor(modelUrl: string): string {
  let u = modelUrl.endsWith("/") ? modelUrl : `${modelUrl}/`;
  if (!/.+\/resolve\/.+\//.test(u)) u += "resolve/main/";
  return new URL("mlc-chat-config.json", u).href;
}
