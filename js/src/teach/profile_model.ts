// Profiles a web-llm model library on the page's GPU: prefills a prompt, then runs decode steps as web-llm does
// (forward, then softmax -> argsort -> top-p sampling on the GPU and the sampled id read back), recording every
// compute pass of each step (PassRecorder: kernel, workgroups, bytes bound, GPU time) and the step's wall time.
// Used by the WebGPU teaching widget (WebGPU.profile) and by bench/kernels.py.
import * as tvmjs from "@mlc-ai/web-runtime";
import { PassRecorder, type PassRecord } from "./passes";
import { adapterPeaks, type Peaks } from "./peaks";

export interface StepProfile {
  /** Wall time from the step's first call to the queue being idle, ms (the sampled id read back). */
  wall_ms: number;
  passes: PassRecord[];
}

export interface ModelProfile {
  timestamps: boolean;
  method: string;
  peaks: Peaks;
  prompt_tokens: number;
  prefill: StepProfile[];
  decode: StepProfile[];
  /** WGSL of every pipeline the library made, by entry point. */
  wgsl: Record<string, string>;
  meta: { quantization: string; params: number; model_type?: string };
  errors: string[];
}

export interface ProfileOptions {
  /** The model library (model.wasm). */
  wasm: ArrayBuffer;
  /** Folder URL whose tensor-cache.json and shards tvmjs reads (from Cache Storage `cacheScope` first). */
  base: string;
  cacheScope: string;
  /** The model's mlc-chat-config.json. */
  config: Record<string, any>;
  promptLen: number;
  steps: number;
  device: GPUDevice;
  timestamps: boolean;
}

export async function profileModel(o: ProfileOptions): Promise<ModelProfile> {
  const device = o.device;
  const errors: string[] = [];
  const onError = (e: Event) => { if (errors.length < 5) errors.push(String((e as GPUUncapturedErrorEvent).error?.message ?? e)); };
  device.addEventListener("uncapturederror", onError);
  const rec = PassRecorder.of(device, o.timestamps); // before tvmjs makes its pipelines: they get named
  const peaks = await adapterPeaks(device);

  const tvm = await tvmjs.instantiate(o.wasm, tvmjs.createPolyfillWASI(), () => {});
  try {
    tvm.initWebGPU(device);
    const dev = tvm.webgpu();
    tvm.beginScope();
    const vm = tvm.detachFromCurrentScope(tvm.createVirtualMachine(dev));
    tvm.endScope();
    await tvm.asyncLoadWebGPUPipelines(vm.getInternalModule());
    await tvm.fetchTensorCache(o.base, dev, o.cacheScope, "cache");
    const cfg = o.config;
    tvm.beginScope();
    const meta = JSON.parse(vm.getFunction("_metadata")().toString());
    const params = tvm.detachFromCurrentScope(tvm.getParamsFromCacheByName(meta.params.map((p: any) => p.name)));
    const f = (n: string) => tvm.detachFromCurrentScope(vm.getFunction(n));
    const [embed, prefill, decode] = [f("embed"), f("prefill"), f("decode")];
    const S = (v: number) => tvm.makeShapeTuple([v]);
    const ctx = Math.min(Number(cfg.context_window_size), 4096), chunk = Number(cfg.prefill_chunk_size);
    const kv = tvm.detachFromCurrentScope(f("create_tir_paged_kv_cache")(S(1), S(ctx), S(chunk), S(16), S(0)));
    const g = (n: string) => tvm.detachFromCurrentScope(tvm.getGlobalFunc(n));
    const [addSeq, begin, end] = [g("vm.builtin.kv_state_add_sequence"), g("vm.builtin.kv_state_begin_forward"),
      g("vm.builtin.kv_state_end_forward")];
    addSeq(kv, new tvmjs.Scalar(0, "int64"));
    const [softmax, argsort, sampleTopP] = [f("softmax_with_temperature"), f("argsort_probs"), f("sample_with_top_p")];
    tvm.endScope();
    const hidden = Number(cfg.model_config?.hidden_size);
    const vocab = Number(cfg.vocab_size);

    const step = async (ids: number[], sample: boolean) => {
      tvm.beginScope();
      const input = tvm.empty([ids.length], "int32", dev).copyFrom(new Int32Array(ids));
      const e = embed(input, params).view([1, ids.length, hidden]);
      begin(kv, tvm.makeShapeTuple([0]), tvm.makeShapeTuple([ids.length]));
      const out = (ids.length > 1 ? prefill : decode)(e, kv, params);
      end(kv);
      if (sample) {
        // greedy as web-llm runs it: temperature 0 is clamped to 1e-6
        const temp = tvm.empty([1], "float32", dev).copyFrom(new Float32Array([1e-6]));
        const probs = softmax(out.get(0).view([1, 1, vocab]), temp).view([1, vocab]);
        const sorted = argsort(probs);
        const u = tvm.empty([1], "float32", dev).copyFrom(new Float32Array([0.5]));
        const rows = tvm.empty([1], "int32", dev).copyFrom(new Int32Array([0]));
        const topP = tvm.empty([1], "float32", dev).copyFrom(new Float32Array([1.0]));
        const tok = sampleTopP(sorted.get(0), sorted.get(1), u, rows, topP);
        tvm.empty([1], "int32", tvm.cpu()).copyFrom(tok);
      }
      tvm.endScope();
      await dev.sync();
    };
    const timed = async (ids: number[], sample: boolean): Promise<StepProfile> => {
      rec.start();
      const t0 = performance.now();
      await step(ids, sample);
      const wall_ms = performance.now() - t0;
      return { wall_ms, passes: await rec.stop() };
    };

    const prompt = Array.from({ length: o.promptLen }, (_, i) => 100 + i);
    const pre: StepProfile[] = [];
    for (let i = 0; i < prompt.length; i += chunk) pre.push(await timed(prompt.slice(i, i + chunk), false));
    await step([7], true); // warm-up decode: pipelines and buffers first used here
    const dec: StepProfile[] = [];
    for (let s = 0; s < o.steps; s++) dec.push(await timed([8 + s], true));
    return {
      timestamps: o.timestamps,
      method: o.timestamps ? "timestamp-query around every compute pass"
        : "wall clock of each step only (the adapter has no timestamp-query): per-kernel times are unknown",
      peaks, prompt_tokens: prompt.length, prefill: pre, decode: dec, wgsl: Object.fromEntries(rec.wgsl),
      meta: { quantization: meta.quantization, params: meta.params.length, model_type: meta.model_type },
      errors,
    };
  } finally {
    device.removeEventListener("uncapturederror", onError);
    tvm.dispose();
  }
}
