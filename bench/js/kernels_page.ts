// Page side of the kernel benchmark: runs a model folder's decode step with tvmjs (web-llm's ABI) and times
// every compute pass (timestamp queries, else per-dispatch wall time), plus the adapter's FLOP/s and GB/s.
import { tvmjs, gpuDevice } from "../../js/src/tvm";

const MAX_PASSES = 2048; // 2 queries a pass; WebGPU caps a query set at 4096

/** Names every pipeline after its entry point and records, per compute pass, which pipeline it ran. */
class PassRecorder {
  device: GPUDevice;
  names: string[] = [];
  active = false;
  perDispatchSync = false;
  querySet?: GPUQuerySet;
  private resolveBuf?: GPUBuffer;
  private readBuf?: GPUBuffer;

  constructor(device: GPUDevice, timestamps: boolean) {
    this.device = device;
    if (timestamps) {
      this.querySet = device.createQuerySet({ type: "timestamp", count: 2 * MAX_PASSES });
      const size = 2 * MAX_PASSES * 8;
      this.resolveBuf = device.createBuffer({ size, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
      this.readBuf = device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    }
    const dev = device as any;
    const label = (d: GPUComputePipelineDescriptor) => ({ ...d, label: d.label || String(d.compute.entryPoint ?? "?") });
    const cp = dev.createComputePipeline.bind(device);
    const cpa = dev.createComputePipelineAsync.bind(device);
    dev.createComputePipeline = (d: GPUComputePipelineDescriptor) => cp(label(d));
    dev.createComputePipelineAsync = (d: GPUComputePipelineDescriptor) => cpa(label(d));
    const ce = dev.createCommandEncoder.bind(device);
    const rec = this;
    dev.createCommandEncoder = (desc?: GPUCommandEncoderDescriptor) => {
      const enc = ce(desc);
      const begin = enc.beginComputePass.bind(enc);
      enc.beginComputePass = (d?: GPUComputePassDescriptor) => {
        if (!rec.active || rec.names.length >= MAX_PASSES) return begin(d);
        const i = rec.names.length;
        rec.names.push("?");
        if (rec.querySet && !d?.timestampWrites) {
          d = { ...(d ?? {}), timestampWrites: { querySet: rec.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } };
        }
        const pass = begin(d);
        const setPipeline = pass.setPipeline.bind(pass);
        pass.setPipeline = (p: GPUComputePipeline) => { rec.names[i] = p.label || "?"; setPipeline(p); };
        return pass;
      };
      return enc;
    };
  }

  start(): void { this.names = []; this.active = true; }

  /** Per-pass GPU ns (timestamp queries), after the queue is idle. */
  async stop(): Promise<number[]> {
    this.active = false;
    const n = this.names.length;
    if (!this.querySet || n === 0) return [];
    const enc = this.device.createCommandEncoder();
    enc.resolveQuerySet(this.querySet, 0, 2 * n, this.resolveBuf!, 0);
    enc.copyBufferToBuffer(this.resolveBuf!, 0, this.readBuf!, 0, 2 * n * 8);
    this.device.queue.submit([enc.finish()]);
    await this.readBuf!.mapAsync(GPUMapMode.READ, 0, 2 * n * 8);
    const t = new BigUint64Array(this.readBuf!.getMappedRange(0, 2 * n * 8).slice(0));
    this.readBuf!.unmap();
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push(t[2 * i + 1] > t[2 * i] ? Number(t[2 * i + 1] - t[2 * i]) : 0);
    return out;
  }
}

async function timeKernel(device: GPUDevice, code: string, buffers: GPUBuffer[], groups: number, reps: number): Promise<number> {
  const module = device.createShaderModule({ code });
  const pipeline = await device.createComputePipelineAsync({ layout: "auto", compute: { module, entryPoint: "main" } });
  const bind = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0),
    entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })) });
  const run = async () => {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline); pass.setBindGroup(0, bind); pass.dispatchWorkgroups(groups);
    pass.end();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
  };
  await run(); // compile + warm
  const times: number[] = [];
  for (let r = 0; r < reps; r++) { const t0 = performance.now(); await run(); times.push(performance.now() - t0); }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] / 1e3;
}

/** Read bandwidth (vec4 loads, grid-stride, no barriers) and FMA throughput (register-only chains). */
async function adapterPeaks(device: GPUDevice): Promise<Record<string, number>> {
  const bytes = 64 << 20, groups = 256, wg = 256, threads = groups * wg;
  const src = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE });
  const dst = device.createBuffer({ size: threads * 16, usage: GPUBufferUsage.STORAGE });
  const n4 = bytes / 16;
  const bw = `@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> o: array<vec4<f32>>;
@compute @workgroup_size(${wg}) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  var s = vec4<f32>(0.0); var i = g.x;
  loop { if (i >= ${n4}u) { break; } s += a[i]; i += ${threads}u; }
  o[g.x] = s;
}`;
  const tBw = await timeKernel(device, bw, [src, dst], groups, 5);
  const iters = 1024;
  const fl = `@group(0) @binding(0) var<storage, read_write> o: array<vec4<f32>>;
@compute @workgroup_size(${wg}) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let x = f32(g.x) * 1e-7;
  var a = vec4<f32>(x, x + 1.0, x + 2.0, x + 3.0); var b = a * 0.5; var c = a * 0.25; var d = a * 0.125;
  let m = vec4<f32>(0.999); let k = vec4<f32>(1e-4);
  for (var i = 0u; i < ${iters}u; i++) { a = fma(a, m, k); b = fma(b, m, k); c = fma(c, m, k); d = fma(d, m, k); }
  o[g.x] = a + b + c + d;
}`;
  const tFl = await timeKernel(device, fl, [dst], groups, 5);
  src.destroy(); dst.destroy();
  return { read_GBps: bytes / tBw / 1e9, fma_GFLOPs: (threads * iters * 4 * 4 * 2) / tFl / 1e9 };
}

export async function run(opts: { base: string; promptLen: number; steps: number }) {
  const state = await gpuDevice();
  const device = state.device;
  const timestamps = !!state.timestamps;
  const errors: string[] = [];
  device.addEventListener("uncapturederror", (e: any) => { if (errors.length < 5) errors.push(String(e.error?.message ?? e)); });
  const rec = new PassRecorder(device, timestamps);
  const peaks = await adapterPeaks(device);

  const wasm = await (await fetch(`${opts.base}model.wasm`)).arrayBuffer();
  const tvm = await tvmjs.instantiate(wasm, tvmjs.createPolyfillWASI(), () => {});
  tvm.initWebGPU(device);
  const dev = tvm.webgpu();
  tvm.beginScope();
  const vm = tvm.detachFromCurrentScope(tvm.createVirtualMachine(dev));
  tvm.endScope();
  await tvm.asyncLoadWebGPUPipelines(vm.getInternalModule());
  const cfg = await (await fetch(`${opts.base}mlc-chat-config.json`)).json();
  await tvm.fetchTensorCache(new URL(opts.base, location.href).href, dev, "webllm-widget-bench", "cache");
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
  tvm.endScope();
  const hidden = Number(cfg.model_config?.hidden_size);

  tvm.beginScope();
  const [softmax, argsort, sampleTopP] = [f("softmax_with_temperature"), f("argsort_probs"), f("sample_with_top_p")];
  tvm.endScope();
  const vocab = Number(cfg.vocab_size);
  // A decode token as web-llm runs it: forward, then softmax -> argsort -> top-p sampling on the GPU and the
  // sampled id copied to the CPU (greedy: temperature clamped to 1e-6, as web-llm does for temperature 0).
  const step = async (ids: number[], sample = true) => {
    tvm.beginScope();
    const input = tvm.empty([ids.length], "int32", dev).copyFrom(new Int32Array(ids));
    const e = embed(input, params).view([1, ids.length, hidden]);
    begin(kv, tvm.makeShapeTuple([0]), tvm.makeShapeTuple([ids.length]));
    const out = (ids.length > 1 ? prefill : decode)(e, kv, params);
    end(kv);
    if (sample) {
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
  const prompt = Array.from({ length: opts.promptLen }, (_, i) => 100 + i);
  for (let i = 0; i < prompt.length; i += chunk) await step(prompt.slice(i, i + chunk), false);
  await step([7]); // warm-up decode

  const wall: number[] = [];
  for (let s = 0; s < opts.steps; s++) { const t0 = performance.now(); await step([8 + s]); wall.push(performance.now() - t0); }

  // Per-kernel: timestamp queries around each pass of one more decode step each.
  const passes: { name: string; ns: number }[][] = [];
  if (timestamps) {
    for (let s = 0; s < opts.steps; s++) {
      rec.start();
      await step([20 + s]);
      const ns = await rec.stop();
      passes.push(rec.names.map((name, i) => ({ name, ns: ns[i] })));
    }
  }
  // Without timestamp queries only the whole step's wall time is known: tvmjs batches every pass of a
  // step into one submit, so a single dispatch cannot be waited on from outside.
  return { errors, timestamps, peaks, wall_ms: wall, passes, meta: { quantization: meta.quantization,
    params: meta.params.length }, config: cfg.model_config, vocab: cfg.vocab_size };
}

(globalThis as any).benchKernels = { run };
