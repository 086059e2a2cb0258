// The model picker's judgement: which build the page would load, whether the adapter can run it and why not, the
// sizes read from a tensor list; and a full Cache Storage quota named as storage-quota.
import { test } from "node:test";
import assert from "node:assert/strict";
import { chooseVariant, fitOnGpu, tensorSizes } from "../src/ui/model_facts.ts";
import { baseOf, isQuotaError } from "../src/engine/model_cache.ts";
import { toEngineError } from "../src/engine/errors.ts";
import { WASM32_BUFFER_LIMIT } from "../src/engine/kv_fit.ts";

const build = (device, schedule = "auto") => ({ device, schedule, key: `${device}-${schedule}`, lib: "model.wasm",
  files: [], size_bytes: 0, weights_bytes: 0, max_param_bytes: 0, kv: {} });
const hardware = { vendor: "nvidia", architecture: "", description: "", is_fallback: false, features: [],
  max_buffer_size: 2 ** 30, max_storage_buffer_binding_size: 2 ** 27 };
const software = { ...hardware, vendor: "google", architecture: "swiftshader", is_fallback: true };

test("the build chosen is the engine's: auto takes the CPU without a hardware adapter, software adapters their kernels", () => {
  const all = [build("webgpu"), build("webgpu", "fallback"), build("cpu")];
  assert.equal(chooseVariant(all, "auto", hardware).key, "webgpu-auto");
  assert.equal(chooseVariant(all, "auto", software).key, "cpu-auto");
  assert.equal(chooseVariant(all, "auto", null).key, "cpu-auto");
  assert.equal(chooseVariant(all, "webgpu", software).key, "webgpu-fallback");
  assert.equal(chooseVariant(all, "webgpu", hardware).key, "webgpu-auto");
  assert.equal(chooseVariant(all, "cpu", hardware).key, "cpu-auto");
  assert.equal(chooseVariant([build("webgpu")], "cpu", hardware), null); // no CPU build: nothing to run
  assert.equal(chooseVariant([build("cpu")], "auto", hardware).key, "cpu-auto"); // CPU-only folder
});

test("fit: features, the largest weight and the KV cache against one buffer; unknown until both are known", () => {
  const cfg = { context_window_size: 4096, quantization: "q4f32_1",
    model_config: { num_hidden_layers: 2, num_key_value_heads: 2, num_attention_heads: 4, head_dim: 16 } };
  assert.deepEqual(fitOnGpu(null, [], 10, cfg).fits, false);
  const f16 = fitOnGpu(software, ["shader-f16"], 10, cfg);
  assert.equal(f16.fits, false);
  assert.match(f16.why, /needs shader-f16/);
  const big = fitOnGpu(hardware, [], 2 ** 27 + 1, cfg); // one byte over maxStorageBufferBindingSize
  assert.equal(big.fits, false);
  assert.match(big.why, /largest weight .* maxStorageBufferBindingSize/);
  // 2 kv heads x 16 x 4 bytes x 2 (K and V) = 256 bytes a token: 2^27 / 256 = 524288 tokens fill the buffer
  const kv = fitOnGpu(hardware, [], 10, { ...cfg, context_window_size: 524288 });
  assert.equal(kv.fits, false);
  assert.match(kv.why, /KV cache needs/);
  assert.equal(fitOnGpu(hardware, [], 10, { ...cfg, context_window_size: 524288 - 32 }).fits, true);
  assert.equal(fitOnGpu(hardware, [], undefined, undefined).fits, null);
  assert.ok(WASM32_BUFFER_LIMIT < 2 ** 32);
});

test("sizes from a tensor list: every shard, and the largest single weight", () => {
  const tc = { records: [
    { dataPath: "params_shard_0.bin", nbytes: 100, records: [{ nbytes: 60 }, { nbytes: 40 }] },
    { dataPath: "params_shard_1.bin", nbytes: 70, records: [{ nbytes: 70 }] },
  ] };
  assert.deepEqual(tensorSizes(tc), { weights_bytes: 170, max_param_bytes: 70, shards: ["params_shard_0.bin", "params_shard_1.bin"] });
});

test("a full quota is named storage-quota, and model files group by their model's folder", () => {
  const quota = Object.assign(new Error("Quota exceeded."), { name: "QuotaExceededError" });
  assert.ok(isQuotaError(quota));
  assert.equal(toEngineError(quota).code, "storage-quota");
  assert.ok(!isQuotaError(new Error("Cannot fetch")));
  assert.equal(baseOf("https://huggingface.co/mlc-ai/M/resolve/main/params_shard_0.bin"), "https://huggingface.co/mlc-ai/M/resolve/main/");
  assert.equal(baseOf("https://webllm-widget.invalid/m/abc/resolve/main/model.wasm"), "https://webllm-widget.invalid/m/abc/resolve/main/");
  assert.equal(baseOf("https://raw.githubusercontent.com/x/lib.wasm"), null);
});
