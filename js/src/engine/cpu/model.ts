// A TVM-compiled model library running on the page's CPU (wasm32 + SIMD128, one thread) through tvmjs:
// parameters from a tensor cache, the paged KV cache on the CPU, chunked prefill and one-token decode.
// Shared by the CPU engine (engine.ts) and the tests/benchmarks that check logits and speed.
import * as tvmjs from "@mlc-ai/web-runtime";
import type { PageErrorCode } from "../../wire/schema.gen";

type Tvm = tvmjs.Instance;
type PackedFunc = tvmjs.PackedFunc;

export interface ModelMetadata {
  model_type?: string;
  quantization?: string;
  context_window_size: number;
  prefill_chunk_size: number;
  params: { name: string; shape: number[]; dtype: string }[];
  kv_cache?: Record<string, number>;
}

/** One parameter's bytes, when the caller supplies weights directly (tests) instead of a tensor cache. */
export interface RawParam {
  name: string;
  shape: number[];
  dtype: string;
  data: Uint8Array;
}

export interface CpuModelOptions {
  /** Tokens the KV cache holds (defaults to the library's context_window_size). */
  contextWindowSize?: number;
  /** Tensor cache (tensor-cache.json + shards) URL and the Cache Storage scope it is kept in. */
  tensorCacheUrl?: string;
  cacheScope?: string;
  params?: RawParam[];
  onProgress?: (fraction: number, text: string) => void;
  signal?: AbortSignal;
}

export class CpuModelError extends Error {
  code: PageErrorCode;
  constructor(code: PageErrorCode, message: string) {
    super(message);
    this.code = code;
    this.name = "CpuModelError";
  }
}

export class CpuModel {
  readonly meta: ModelMetadata;
  /** Hidden size, known after the first forward() (read off the embedding's shape). */
  hidden = 0;
  readonly contextWindowSize: number;
  /** Tokens currently held in the KV cache. */
  filled = 0;
  private tvm: Tvm;
  private dev: tvmjs.DLDevice;
  private vm: tvmjs.VirtualMachine;
  private params: tvmjs.TVMObject;
  private kv: tvmjs.TVMObject;
  private fEmbed: PackedFunc;
  private fPrefill: PackedFunc;
  private fDecode: PackedFunc;
  private fBegin: PackedFunc;
  private fEnd: PackedFunc;
  private fAdd: PackedFunc;
  private fRemove: PackedFunc;
  private fPopN: PackedFunc | null;

  private constructor(tvm: Tvm, meta: ModelMetadata, opts: CpuModelOptions) {
    this.tvm = tvm;
    this.meta = meta;
    this.dev = tvm.cpu();
    tvm.beginScope();
    this.vm = tvm.detachFromCurrentScope(tvm.createVirtualMachine(this.dev));
    const fn = (name: string) => tvm.detachFromCurrentScope(this.vm.getFunction(name));
    this.fEmbed = fn("embed");
    this.fPrefill = fn("prefill");
    this.fDecode = fn("decode");
    const g = (name: string) => tvm.detachFromCurrentScope(tvm.getGlobalFunc(name));
    this.fBegin = g("vm.builtin.kv_state_begin_forward");
    this.fEnd = g("vm.builtin.kv_state_end_forward");
    this.fAdd = g("vm.builtin.kv_state_add_sequence");
    this.fRemove = g("vm.builtin.kv_state_remove_sequence");
    try {
      this.fPopN = g("vm.builtin.kv_state_popn");
    } catch {
      this.fPopN = null;
    }
    this.params = tvm.detachFromCurrentScope(tvm.getParamsFromCacheByName(meta.params.map((p) => p.name)));
    this.contextWindowSize = Math.min(opts.contextWindowSize ?? meta.context_window_size, meta.context_window_size);
    const create = this.vm.getFunction("create_tir_paged_kv_cache");
    const st = (n: number) => tvm.makeShapeTuple([n]);
    this.kv = tvm.detachFromCurrentScope(
      create(st(1), st(this.contextWindowSize), st(meta.prefill_chunk_size), st(16), st(0)) as tvmjs.TVMObject,
    );
    tvm.endScope();
    this.fAdd(this.kv, new tvmjs.Scalar(0, "int64"));
  }

  /** Instantiate `wasm` on the CPU, load the weights (tensor cache or raw params), create the KV cache. */
  static async create(wasm: ArrayBuffer | Uint8Array, opts: CpuModelOptions = {}): Promise<CpuModel> {
    const bytes = wasm instanceof Uint8Array ? wasm.slice().buffer : wasm;
    let tvm: Tvm;
    try {
      tvm = await tvmjs.instantiate(bytes as ArrayBuffer, tvmjs.createPolyfillWASI(), () => undefined);
    } catch (e) {
      throw new CpuModelError("bad-artifact", `the CPU model library could not be instantiated: ${String(e)}`);
    }
    let meta: ModelMetadata;
    try {
      tvm.beginScope();
      const vm = tvm.createVirtualMachine(tvm.cpu());
      meta = JSON.parse(String(vm.getFunction("_metadata")()));
      tvm.endScope();
    } catch (e) {
      throw new CpuModelError("bad-artifact", `the library has no usable _metadata (is it a webllm-widget CPU build?): ${String(e)}`);
    }
    if (opts.params) {
      const total = opts.params.length;
      opts.params.forEach((p, i) => {
        tvm.beginScope();
        const t = tvm.detachFromCurrentScope(tvm.empty(p.shape, p.dtype, tvm.cpu()));
        t.copyFromRawBytes(p.data);
        tvm.endScope();
        tvm.tensorCacheUpdate(p.name, t, true);
        opts.onProgress?.((i + 1) / total, `loaded ${p.name}`);
      });
    } else if (opts.tensorCacheUrl) {
      if (opts.onProgress) {
        tvm.registerInitProgressCallback((r) => opts.onProgress!(r.progress, r.text));
      }
      await tvm.fetchTensorCache(opts.tensorCacheUrl, tvm.cpu(), {
        cacheScope: opts.cacheScope ?? "webllm/model",
        signal: opts.signal,
      } as tvmjs.FetchTensorCacheOptions);
    } else {
      throw new CpuModelError("bad-model", "no weights: pass tensorCacheUrl or params");
    }
    return new CpuModel(tvm, meta, opts);
  }

  /** Forget every token in the KV cache. */
  reset(): void {
    this.fRemove(this.kv, new tvmjs.Scalar(0, "int64"));
    this.fAdd(this.kv, new tvmjs.Scalar(0, "int64"));
    this.filled = 0;
  }

  /** Keep only the first `n` tokens in the KV cache; false when the runtime cannot (then call reset()). */
  popTo(n: number): boolean {
    if (n >= this.filled) return true;
    if (!this.fPopN || n < 0) return false;
    this.fPopN(this.kv, new tvmjs.Scalar(0, "int64"), new tvmjs.Scalar(this.filled - n, "int64"));
    this.filled = n;
    return true;
  }

  private step(ids: number[]): Float32Array {
    const tvm = this.tvm;
    tvm.beginScope();
    try {
      const input = tvm.empty([ids.length], "int32", this.dev);
      input.copyFrom(Int32Array.from(ids));
      const flat = this.fEmbed(input, this.params) as tvmjs.Tensor;
      this.hidden = flat.shape[1];
      const emb = flat.view([1, ids.length, this.hidden]);
      this.fBegin(this.kv, tvm.makeShapeTuple([0]), tvm.makeShapeTuple([ids.length]));
      const out = (ids.length > 1 ? this.fPrefill : this.fDecode)(emb, this.kv, this.params) as tvmjs.TVMArray;
      this.fEnd(this.kv);
      this.filled += ids.length;
      const logits = out.get(0) as tvmjs.Tensor;
      return new Float32Array(logits.toArray() as Float32Array);
    } finally {
      tvm.endScope();
    }
  }

  /**
   * Append `ids` to the sequence and return the logits after the last one (a copy, `vocab` floats).
   * Prompts longer than prefill_chunk_size go in chunks, as web-llm does. `onChunk(done)` reports progress.
   */
  forward(ids: number[], onChunk?: (done: number) => void): Float32Array {
    if (ids.length === 0) throw new CpuModelError("error", "forward() needs at least one token");
    if (this.filled + ids.length > this.contextWindowSize) {
      throw new CpuModelError(
        "context-overflow",
        `the conversation needs ${this.filled + ids.length} tokens but the context window holds ${this.contextWindowSize}; reset the chat`,
      );
    }
    const chunk = this.meta.prefill_chunk_size;
    let logits: Float32Array | null = null;
    for (let i = 0; i < ids.length; i += chunk) {
      logits = this.step(ids.slice(i, i + chunk));
      onChunk?.(Math.min(ids.length, i + chunk));
    }
    return logits!;
  }

  dispose(): void {
    this.kv.dispose();
    this.params.dispose();
    this.vm.dispose();
    this.tvm.dispose();
  }
}

export { tvmjs };
export { detectCpuBuild } from "./features";
