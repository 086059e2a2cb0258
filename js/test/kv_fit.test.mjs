// The KV-cache check refuses a model whose one-layer cache cannot be one GPU buffer, before web-llm allocates.
import { test } from "node:test";
import assert from "node:assert/strict";
import { WASM32_BUFFER_LIMIT, bufferLimit, checkKvCacheFits, configUrlFor, kvCacheNeed } from "../src/engine/kv_fit.ts";
import { EngineError } from "../src/engine/types.ts";

// SmolLM2-135M's shape: 30 layers, 3 KV heads of 64, f32 compute.
const smol = (extra = {}) => ({
  quantization: "q4f32_1",
  context_window_size: 2048,
  model_config: { num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3, hidden_size: 576 },
  ...extra,
});

test("one layer's cache: pages of 16 tokens plus one, K and V, 4 bytes (f32) or 2 (f16) per element", () => {
  const need = kvCacheNeed(smol());
  const tokenBytes = 2 * 3 * 64 * 4;
  assert.equal(need.token_bytes, tokenBytes);
  assert.equal(need.per_layer_bytes, (2048 / 16 + 1) * 16 * tokenBytes);
  assert.equal(need.window, "context_window_size");
  assert.equal(need.layers, 30);
  assert.equal(kvCacheNeed(smol({ quantization: "q4f16_1" })).token_bytes, tokenBytes / 2);
  // a sliding window sizes the cache when the context window is unset (-1)
  const sliding = kvCacheNeed(smol({ context_window_size: -1, sliding_window_size: 100 }));
  assert.equal(sliding.window, "sliding_window_size");
  assert.equal(sliding.per_layer_bytes, (Math.ceil(100 / 16) + 1) * 16 * tokenBytes);
  assert.equal(kvCacheNeed({ model_config: {} }), null); // a config that does not say: no check
});

test("the smallest limit wins: the adapter's two, or the wasm32 runtime's", () => {
  assert.deepEqual(bufferLimit(null), ["the wasm32 runtime's 32-bit buffer size", WASM32_BUFFER_LIMIT]);
  assert.deepEqual(bufferLimit({ max_buffer_size: 2 ** 30, max_storage_buffer_binding_size: 2 ** 28 }),
    ["WebGPU maxStorageBufferBindingSize", 2 ** 28]);
});

test("a cache past the limit is refused with out-of-memory, the numbers, and a context window that fits", () => {
  const gpu = { max_buffer_size: 2 ** 30, max_storage_buffer_binding_size: 2 ** 30 };
  checkKvCacheFits("smol", smol(), gpu); // 2048 tokens: ~6 MiB a layer, fits
  const big = smol({ context_window_size: 1 << 24 });
  assert.throws(() => checkKvCacheFits("smol", big, gpu), (err) => {
    assert.ok(err instanceof EngineError);
    assert.equal(err.code, "out-of-memory");
    assert.equal(err.detail.context_window_size, 1 << 24);
    assert.ok(err.detail.needed_bytes > err.detail.limit_bytes);
    // the advice fits: a cache of max_tokens is within the limit, one more page is not
    const fits = kvCacheNeed(smol({ context_window_size: err.detail.max_tokens }));
    assert.ok(fits.per_layer_bytes <= 2 ** 30);
    assert.ok(kvCacheNeed(smol({ context_window_size: err.detail.max_tokens + 16 })).per_layer_bytes > 2 ** 30);
    assert.match(err.message, new RegExp(`at most ${err.detail.max_tokens} tokens`));
    return true;
  });
});

test("the config URL is web-llm's: resolve/main/ added unless the URL has a resolve path", () => {
  assert.equal(configUrlFor("https://h.test/m"), "https://h.test/m/resolve/main/mlc-chat-config.json");
  assert.equal(configUrlFor("https://h.test/m/resolve/v1/"), "https://h.test/m/resolve/v1/mlc-chat-config.json");
});
