// The tvmjs runtime bundle (shipped to the page as a content-addressed blob): one WebGPU device per
// page, and GPULibrary, which loads a TVM-compiled wasm library and runs its VM functions.
import * as tvmjs from "@mlc-ai/web-runtime";
import type { GPUTimings, PageErrorCode } from "./wire/schema.gen";

import { PassRecorder } from "./teach/passes";
import { profileModel, type ModelProfile } from "./teach/profile_model";

export { tvmjs, profileModel, type ModelProfile };
export { batchDispatch, dispatchStats } from "./engine/dispatch";

export const RUNTIME_NAME = "tvmjs 0.27 (@mlc-ai/web-runtime 0.27.0-dev0)";

/** A tensor crossing the page boundary: shape, dtype and its bytes (C order). */
export interface RawTensor {
  shape: number[];
  dtype: string;
  data: Uint8Array;
}

/** Per-run times of a function (the `timings` of a GPU call's result). */
export type Timings = GPUTimings;

export class RuntimeError extends Error {
  code: PageErrorCode;
  constructor(code: PageErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

interface DeviceState {
  adapter: GPUAdapter;
  device: GPUDevice;
  timestamps: boolean;
  lost?: string;
}

const DEVICE_KEY = "__webllmWidgetGPUDevice";

/** The page's one WebGPU device for TVM work, with the adapter's own limits and useful features. */
export function gpuDevice(): Promise<DeviceState> {
  const g = globalThis as unknown as Record<string, Promise<DeviceState> | undefined>;
  if (!g[DEVICE_KEY]) {
    g[DEVICE_KEY] = createDevice();
    g[DEVICE_KEY]!.catch(() => { g[DEVICE_KEY] = undefined; });
  }
  return g[DEVICE_KEY]!;
}

/** A new WebGPU device on the page's adapter with the same features and limits (a model profile gets its own:
 * tvmjs destroys the device it ran on when its instance is disposed). */
export async function createDevice(): Promise<DeviceState> {
  const gpu = (navigator as Navigator & { gpu?: GPU }).gpu;
  if (!gpu) throw new RuntimeError("no-webgpu", "This browser page has no WebGPU (navigator.gpu is missing).");
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new RuntimeError("no-webgpu", "WebGPU is present but no adapter was found.");
  const wanted = ["shader-f16", "subgroups", "timestamp-query"] as GPUFeatureName[];
  const requiredFeatures = wanted.filter((f) => adapter.features.has(f));
  const L = adapter.limits;
  // Ask for what the adapter offers: TVM kernels and big weight buffers want more than the defaults.
  const requiredLimits: Record<string, number> = {
    maxBufferSize: L.maxBufferSize,
    maxStorageBufferBindingSize: L.maxStorageBufferBindingSize,
    maxComputeWorkgroupStorageSize: L.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: L.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: L.maxComputeWorkgroupSizeX,
    maxComputeWorkgroupSizeY: L.maxComputeWorkgroupSizeY,
    maxComputeWorkgroupSizeZ: L.maxComputeWorkgroupSizeZ,
    maxStorageBuffersPerShaderStage: L.maxStorageBuffersPerShaderStage,
  };
  const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  const state: DeviceState = { adapter, device, timestamps: requiredFeatures.includes("timestamp-query" as GPUFeatureName) };
  device.lost.then((info) => { state.lost = `${info.reason}: ${info.message}`; });
  return state;
}

// Timestamp queries around every compute pass tvmjs begins on our device while a timed run is active.

/** A TVM-compiled wasm library on the page's WebGPU device. */
export class GPULibrary {
  readonly tvm: tvmjs.Instance;
  readonly vm: tvmjs.VirtualMachine;
  readonly state: DeviceState;
  /** Set once the wasm instance exited (TVM calls exit(1) on an error): create a new one to go on. */
  broken = false;
  private recentLog: string[];
  private recorder: PassRecorder;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(tvm: tvmjs.Instance, vm: tvmjs.VirtualMachine, state: DeviceState, recentLog: string[],
    recorder: PassRecorder) {
    this.tvm = tvm;
    this.vm = vm;
    this.state = state;
    this.recentLog = recentLog;
    this.recorder = recorder;
  }

  static async create(wasm: Uint8Array, log?: (msg: string) => void): Promise<GPULibrary> {
    // TVM reports errors through the wasm's stderr before exit(1): keep the last lines for the message.
    const recentLog: string[] = [];
    const logger = (msg: string) => {
      recentLog.push(msg);
      if (recentLog.length > 30) recentLog.shift();
      log?.(msg);
    };
    const state = await gpuDevice();
    // Before tvmjs makes the library's pipelines, so they are named after their kernels (and timed per pass).
    const recorder = PassRecorder.of(state.device, state.timestamps);
    let tvm: tvmjs.Instance;
    try {
      tvm = await tvmjs.instantiate(
        wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength) as ArrayBuffer,
        tvmjs.createPolyfillWASI(), logger,
      );
    } catch (err) {
      throw new RuntimeError("bad-artifact", `The library is not a tvmjs wasm this runtime can load: ${String(err)}`);
    }
    tvm.initWebGPU(state.device);
    tvm.beginScope();
    const vm = tvm.detachFromCurrentScope(tvm.createVirtualMachine(tvm.webgpu()));
    tvm.endScope();
    await tvm.asyncLoadWebGPUPipelines(vm.getInternalModule());
    return new GPULibrary(tvm, vm, state, recentLog, recorder);
  }

  /** Run VM function `name` on `args`; resolves to its outputs copied back to the page. */
  call(name: string, args: RawTensor[]): Promise<RawTensor[]> {
    return this.serial(async () => {
      const { outputs } = await this.run(name, args, 0, 0);
      return outputs;
    });
  }

  /** Time `repeat` runs of `name` (after `warmup` runs) on inputs uploaded once. */
  time(name: string, args: RawTensor[], repeat: number, warmup = 1): Promise<Timings> {
    return this.serial(async () => (await this.run(name, args, repeat, warmup)).timings!);
  }

  dispose(): void {
    this.vm.dispose();
    this.tvm.dispose();
  }

  private serial<T>(job: () => Promise<T>): Promise<T> {
    // tvmjs scopes are a stack: calls must not interleave across their awaits.
    const p = this.queue.then(job, job);
    this.queue = p.catch(() => undefined);
    return p;
  }

  private async run(name: string, args: RawTensor[], repeat: number, warmup: number): Promise<{ outputs: RawTensor[]; timings?: Timings }> {
    if (this.state.lost) throw new RuntimeError("device-lost", `The WebGPU device was lost (${this.state.lost}); reload the page.`);
    const tvm = this.tvm;
    const dev = tvm.webgpu();
    const device = this.state.device;
    device.pushErrorScope("validation");
    device.pushErrorScope("out-of-memory");
    tvm.beginScope();
    try {
      let fn: tvmjs.PackedFunc;
      try {
        fn = this.vm.getFunction(name);
      } catch (err) {
        throw new RuntimeError("kernel-error", `The library has no function ${JSON.stringify(name)}: ${String(err)}`);
      }
      const inputs = args.map((a) => {
        const t = tvm.empty(a.shape, a.dtype, dev);
        if (a.data.byteLength % 4 === 0) {
          t.copyFromRawBytes(a.data);
        } else {
          t.copyFrom(tvm.empty(a.shape, a.dtype, tvm.cpu()).copyFromRawBytes(a.data));
        }
        return t;
      });
      let timings: Timings | undefined;
      let result: unknown;
      if (repeat > 0) {
        for (let i = 0; i < warmup; i++) {
          tvm.beginScope();
          fn(...inputs);
          await dev.sync();
          tvm.endScope();
        }
        const timer = this.recorder.timestamps ? this.recorder : null;
        const runs: number[] = [];
        for (let i = 0; i < repeat; i++) {
          tvm.beginScope();
          timer?.start();
          const t0 = performance.now();
          fn(...inputs);
          await dev.sync();
          const wall = performance.now() - t0;
          runs.push(timer ? (await timer.stop()).reduce((ms, p) => ms + (p.ns ?? 0) / 1e6, 0) : wall);
          tvm.endScope();
        }
        timings = timer
          ? { runs_ms: runs, method: "timestamp-query", detail: "sum of GPU compute-pass durations per run (timestamp-query)" }
          : { runs_ms: runs, method: "wall-clock", detail: "wall time from the call to queue.onSubmittedWorkDone (adapter has no timestamp-query)" };
        return { outputs: [], timings };
      }
      result = fn(...inputs);
      const outs = flatten(result);
      const cpuOuts = outs.map((o) => {
        const c = tvm.empty(o.shape, o.dtype, tvm.cpu());
        c.copyFrom(o);
        return c;
      });
      await dev.sync();
      const outputs = cpuOuts.map((c) => ({ shape: c.shape.slice(), dtype: c.dtype, data: c.toRawBytes() }));
      return { outputs, timings };
    } catch (err) {
      if (err instanceof RuntimeError) throw err;
      const text = errorText(err);
      if (/exit\(/.test(text)) this.broken = true;
      const detail = this.recentLog.filter((l) => l.trim()).slice(-8).join("\n");
      this.recentLog.length = 0;
      throw new RuntimeError("kernel-error", `${name} failed: ${text}${detail ? `\n${detail}` : ""}`);
    } finally {
      tvm.endScope();
      const oom = await device.popErrorScope();
      const invalid = await device.popErrorScope();
      if (oom) throw new RuntimeError("out-of-memory", `${name}: the GPU ran out of memory (${oom.message}).`);
      if (invalid) throw new RuntimeError("kernel-error", `${name}: WebGPU rejected the work (${invalid.message}).`);
    }
  }
}

/** A readable message from whatever the runtime threw (Errors, FFI error objects, strings). */
export function errorText(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (err && typeof err === "object") {
    const o = err as Record<string, unknown>;
    if (typeof o.message === "string") return [o.kind, o.message].filter(Boolean).join(": ");
    try {
      return JSON.stringify(err);
    } catch {
      /* fall through */
    }
  }
  return String(err);
}

function flatten(result: unknown): tvmjs.Tensor[] {
  if (result instanceof tvmjs.Tensor) return [result];
  if (result instanceof tvmjs.TVMArray) {
    const out: tvmjs.Tensor[] = [];
    for (let i = 0; i < result.size(); i++) out.push(...flatten(result.get(i)));
    return out;
  }
  if (result === undefined || result === null) return [];
  throw new RuntimeError("kernel-error", `The function returned ${String(result)}, not tensors; return tensors or a tuple of them.`);
}
