// web-llm's decode loop with the sampled ids read back asynchronously.
//
// web-llm 0.2.85 decodes a token per `decodeStep`: it embeds the last sampled id (written from the CPU), runs
// the model and the sampling kernels, copies the id back and waits for the GPU (`device.sync()`) before the next
// step is even encoded. The GPU idles while the page reads the id, checks the stop conditions and encodes the
// next step. Here the sampled id also stays on the GPU, where the next step's embedding reads it, so step k+1 is
// encoded and submitted before the id of step k is known; ids come back through a small ring of MAP_READ buffers.
// The stop conditions are checked one step behind: when the id of step k ends the answer, step k+1 has already
// run and is discarded (its position is popped off the KV cache: `vm.builtin.kv_state_popn`). No step runs ahead
// where the stop is certain anyway (max_tokens, a full context window), and a stop from outside (interrupt,
// reset) drops the step in flight the same way.
//
// The sampling is web-llm's own GPU path (softmax_with_temperature, argsort_probs, sample_with_top_p and one
// uniform draw a step from the same generator), so the ids equal those of web-llm's loop. What needs the logits
// on the CPU or the previous id before the next step (logprobs, logit processors, penalties, logit_bias, grammars)
// keeps web-llm's loop: `decodeLoop()` says which loop ran and why.
//
// Greedy decoding (temperature 0, or anything at web-llm's floor of 1e-6) takes the library's `argmax_logits`
// instead when the library has it: the id of the largest logit, ties to the lowest id, in two small kernels
// instead of the softmax, the vocabulary-wide argsort and the top-p walk. web-llm's own path at that temperature
// is a sample of softmax(logits / 1e-6), which differs from the argmax only where the two largest logits are
// within ~1e-5 of each other (it then picks either by the uniform draw). The uniform is still drawn every step,
// so the generator stays where web-llm's loop would leave it. `decodeLoop()` says "async: argmax" for such an
// answer, and "async: greedy by sampling (why)" when the library lacks the function.
//
// Written against web-llm's LLMChatPipeline (pinned version): `checkPipeline` names what it needs, and a pipeline
// that lacks it keeps web-llm's loop, which the load and every answer report ("sync: why");
// tests/browser/test_chat_engine.py checks both loops give the same tokens.

interface TvmTensor {
  shape: number[];
  byteOffset: number;
  getDataPtr(): number;
  view(shape: number[]): TvmTensor;
  copyFrom(x: TvmTensor | ArrayLike<number>): TvmTensor;
  dispose(): void;
  get?(i: number): TvmTensor;
}

interface TvmArray {
  get(i: number): TvmTensor;
}

interface Tvm {
  beginScope(): void;
  endScope(): void;
  detachFromCurrentScope<T>(x: T): T;
  empty(shape: number[], dtype: string, dev: unknown): TvmTensor;
  uniform(shape: number[], low: number, high: number, dev: unknown): TvmTensor;
  rng?: { randomFloat(): number };
  makeShapeTuple(shape: number[]): unknown;
  scalar(value: number, dtype: string): unknown;
  getGlobalFunc(name: string): (...args: unknown[]) => unknown;
  lib: { webGPUContext?: WebGPUContext };
}

interface WebGPUContext {
  device: GPUDevice;
  pendingEncoder: GPUCommandEncoder | null;
  flushCommands(): void;
  gpuBufferFromPtr(ptr: number): GPUBuffer;
}

type GenConfig = Record<string, unknown> | undefined;

/** The parts of web-llm's LLMChatPipeline this loop uses. */
interface Pipeline {
  tvm: Tvm;
  vm: { getFunction(name: string): unknown };
  device: unknown;
  params: unknown;
  kvCache: unknown;
  rnnState?: unknown;
  config: Record<string, unknown>;
  fullVocabSize: number;
  contextWindowSize: number;
  slidingWindowSize: number;
  filledKVCacheLength: number;
  outputIds: number[];
  stopTriggered: boolean;
  logitProcessor?: unknown;
  sampleIndicesDevice: TvmTensor;
  decodingTotalTime: number;
  decodingTotalTokens: number;
  curRoundDecodingTotalTime: number;
  curRoundDecodingTotalTokens: number;
  embed(ids: TvmTensor, params: unknown): TvmTensor;
  invokeDecode(embeddings: TvmTensor): TvmArray;
  getActiveKVStates(): unknown[];
  fKVCacheBeginForward(state: unknown, seqIds: unknown, lens: unknown): void;
  fKVCacheEndForward(state: unknown): void;
  fsoftmaxWithTemperature(logits: TvmTensor, temperature: TvmTensor): TvmTensor;
  fargsortProbs(probs: TvmTensor): TvmArray;
  fsampleWithTopP(sortedProbs: TvmTensor, sortedIds: TvmTensor, uniform: TvmTensor, sampleIdx: TvmTensor, topP: TvmTensor): TvmTensor;
  processNextToken(token: number, genConfig: GenConfig): void;
  decodeStep(genConfig: GenConfig): Promise<void>;
  prefillStep(...args: unknown[]): Promise<void>;
  triggerStop(): void;
  resetChat(keepStats?: boolean): void;
}

const METHODS = ["embed", "invokeDecode", "getActiveKVStates", "fKVCacheBeginForward", "fKVCacheEndForward",
  "fsoftmaxWithTemperature", "fargsortProbs", "fsampleWithTopP", "processNextToken", "decodeStep", "prefillStep",
  "triggerStop", "resetChat"];
const FIELDS = ["vm", "params", "kvCache", "config", "fullVocabSize", "contextWindowSize", "slidingWindowSize",
  "filledKVCacheLength", "outputIds", "stopTriggered", "sampleIndicesDevice", "decodingTotalTime", "decodingTotalTokens",
  "curRoundDecodingTotalTime", "curRoundDecodingTotalTokens"];

const STATE = Symbol.for("webllmWidget.asyncDecode");
/** web-llm's floor of the temperature (sampleTokenFromLogits): an answer at it is greedy. */
const GREEDY = 1e-6;
/** MAP_READ buffers of the ring: a step's id is read while at most one more step is in flight. */
const RING = 4;

/** Why `p` is not the web-llm pipeline this loop was written for, or null when it is. */
export function checkPipeline(p: unknown): string | null {
  if (!p || typeof p !== "object") return "no pipeline";
  const o = p as Record<string, unknown>;
  for (const m of METHODS) if (typeof o[m] !== "function") return `LLMChatPipeline.${m} is missing`;
  for (const f of FIELDS) if (!(f in o)) return `LLMChatPipeline.${f} is missing`;
  if (o.rnnState !== undefined) return "the model keeps an RNN state";
  const tvm = o.tvm as Tvm | undefined;
  if (!tvm || typeof tvm.uniform !== "function" || typeof tvm.scalar !== "function") return "the pipeline's tvmjs instance is not the one expected";
  const ctx = tvm.lib?.webGPUContext;
  if (!ctx || typeof ctx.flushCommands !== "function" || typeof ctx.gpuBufferFromPtr !== "function" || !("pendingEncoder" in ctx)) {
    return "tvmjs's WebGPU context is not the one expected";
  }
  tvm.beginScope();
  try {
    tvm.getGlobalFunc("vm.builtin.kv_state_popn");
  } catch (e) {
    return `the runtime has no vm.builtin.kv_state_popn (${e})`;
  } finally {
    tvm.endScope();
  }
  return null;
}

/** Installs the asynchronous loop on a loaded model's pipeline; returns "async", or "sync: why" when it keeps
 * web-llm's own loop. `wanted` "sync" keeps web-llm's loop on purpose (tests and benchmarks compare both). */
export function installAsyncDecode(p: unknown): string {
  const why = checkPipeline(p);
  if (why) return `sync: ${why}`;
  const pipe = p as Pipeline & Record<symbol, AsyncDecode>;
  if (!pipe[STATE]) pipe[STATE] = new AsyncDecode(pipe);
  return "async";
}

/** Which loop the next answers of `p` take: "async" (default) or "sync" (web-llm's own). */
export function setDecodeLoop(p: unknown, mode: "async" | "sync"): void {
  const s = (p as Record<symbol, AsyncDecode> | null)?.[STATE];
  if (s) s.mode = mode;
}

/** The loop the last answer of `p` ran: "async" (sampled on the GPU), "async: argmax" (greedy, argmax_logits),
 * "async: greedy by sampling (why)", or "sync: why"; null before any answer. */
export function decodeLoop(p: unknown): string | null {
  const s = (p as Record<symbol, AsyncDecode> | null)?.[STATE];
  return s ? s.last : null;
}

function has(v: unknown): boolean {
  return v !== undefined && v !== null;
}

interface Step {
  buf: GPUBuffer;
  read: Promise<number>;
}

class AsyncDecode {
  mode: "async" | "sync" = "async";
  last: string | null = null;
  private readonly ctx: WebGPUContext;
  private readonly free: GPUBuffer[] = [];
  private readonly orig: { decodeStep: Pipeline["decodeStep"]; triggerStop: () => void; resetChat: (k?: boolean) => void; prefillStep: Pipeline["prefillStep"] };
  private ids: TvmTensor | null = null; // the last sampled id, on the GPU: the next step's input
  private temperature: TvmTensor | null = null;
  private topP: TvmTensor | null = null;
  private settings: [number, number] = [NaN, NaN];
  private inflight: Step | null = null; // a submitted step whose id has not been processed yet
  private round: string | null = null; // this answer's loop, decided at its first decode step
  private greedy = false; // this answer takes argmax_logits
  private fargmax: ((logits: TvmTensor) => TvmTensor) | null | undefined = undefined; // looked up once

  constructor(private readonly p: Pipeline) {
    this.ctx = p.tvm.lib.webGPUContext as WebGPUContext;
    const self = this;
    this.orig = { decodeStep: p.decodeStep, triggerStop: p.triggerStop, resetChat: p.resetChat, prefillStep: p.prefillStep };
    p.decodeStep = function (genConfig: GenConfig) {
      return self.decodeStep(genConfig);
    };
    p.triggerStop = function () {
      self.orig.triggerStop.call(p);
      self.discard(true);
    };
    p.resetChat = function (keepStats?: boolean) {
      self.discard(false); // the cache is cleared anyway
      self.orig.resetChat.call(p, keepStats);
    };
    p.prefillStep = function (...args: unknown[]) {
      self.discard(true);
      self.round = null;
      return self.orig.prefillStep.apply(p, args);
    };
  }

  /** Why this answer must take web-llm's loop (it needs the logits or the last id on the CPU), or null. */
  private needsSync(g: GenConfig): string | null {
    if (this.mode === "sync") return "asked for";
    const p = this.p, c = p.config;
    const pick = (k: string) => (g && has(g[k]) ? g[k] : c[k]);
    if (p.logitProcessor !== undefined) return "a logit processor (logprobs) reads the logits on the CPU";
    if (g && (g.logprobs || g.enable_latency_breakdown)) return "logprobs or a latency breakdown asked for";
    const rf = g?.response_format as { type?: string } | undefined;
    if (rf && rf.type && rf.type !== "text") return "a grammar masks each step by the previous id";
    if (g && has(g.logit_bias) && Object.keys(g.logit_bias as object).length) return "logit_bias";
    const rep = pick("repetition_penalty"), fr = pick("frequency_penalty"), pr = pick("presence_penalty");
    if ((has(rep) && rep !== 1) || (has(fr) && fr !== 0) || (has(pr) && pr !== 0)) return "penalties count the ids so far";
    return null;
  }

  private async decodeStep(g: GenConfig): Promise<void> {
    const p = this.p;
    if (this.round === null) {
      const why = this.needsSync(g);
      this.round = why ? `sync: ${why}` : "async";
      this.greedy = false;
      if (!why && this.temperatureOf(g) <= GREEDY) {
        const f = this.argmaxFunc();
        this.greedy = typeof f !== "string";
        this.round = this.greedy ? "async: argmax" : `async: greedy by sampling (${f})`;
      }
      this.last = this.round;
    }
    if (!this.round.startsWith("async")) return this.orig.decodeStep.call(p, g);
    if (p.stopTriggered) throw new Error("Cannot run decode when stopped");
    const t0 = performance.now();
    if (!this.inflight) {
      // the first step of an answer: its input is the id the prefill sampled, on the CPU
      this.prepare(g);
      (this.ids as TvmTensor).copyFrom([p.outputIds[p.outputIds.length - 1]]);
      this.inflight = this.launch();
    }
    const cur = this.inflight;
    this.inflight = null;
    // the step after it, unless the id in flight surely ends the answer
    const maxTokens = g && has(g.max_tokens) ? Number(g.max_tokens) : Infinity;
    const certainStop = p.outputIds.length + 1 >= maxTokens
      || (p.slidingWindowSize === -1 && p.filledKVCacheLength >= p.contextWindowSize);
    if (!certainStop) this.inflight = this.launch();
    const token = await cur.read;
    const t1 = performance.now();
    p.decodingTotalTime += (t1 - t0) / 1e3;
    p.decodingTotalTokens += 1;
    p.curRoundDecodingTotalTokens += 1;
    p.curRoundDecodingTotalTime += (t1 - t0) / 1e3;
    if (token < 0 || token >= p.fullVocabSize) throw new Error("InternalError: failed to sample a valid token.");
    // web-llm's stop checks count the cache as it was after this id's step: the step in flight is not in it yet
    const ahead = this.inflight ? 1 : 0;
    p.filledKVCacheLength -= ahead;
    try {
      p.processNextToken(token, g);
    } finally {
      p.filledKVCacheLength += ahead;
    }
    if (p.stopTriggered) this.discard(true);
  }

  /** The answer's temperature as web-llm's sampleTokenFromLogits takes it: at least 1e-6 (GREEDY), 1.0 when unset. */
  private temperatureOf(g: GenConfig): number {
    const c = this.p.config;
    const t = g && has(g.temperature) ? Number(g.temperature) : has(c.temperature) ? Number(c.temperature) : 1.0;
    return Math.max(GREEDY, t);
  }

  /** The library's argmax_logits, or why there is none (a library built before it, or not by this project). */
  private argmaxFunc(): ((logits: TvmTensor) => TvmTensor) | string {
    if (this.fargmax === undefined) {
      const tvm = this.p.tvm;
      tvm.beginScope();
      try {
        const f = this.p.vm.getFunction("argmax_logits");
        this.fargmax = typeof f === "function" ? tvm.detachFromCurrentScope(f) as (logits: TvmTensor) => TvmTensor : null;
      } catch {
        this.fargmax = null;
      } finally {
        tvm.endScope();
      }
    }
    return this.fargmax ?? "the library has no argmax_logits";
  }

  /** Device tensors of the answer's sampling settings (written when they change) and of the id. */
  private prepare(g: GenConfig): void {
    const p = this.p, tvm = p.tvm, c = p.config;
    const pick = (k: string) => (g && has(g[k]) ? Number(g[k]) : has(c[k]) ? Number(c[k]) : undefined);
    // as web-llm's sampleTokenFromLogits: temperature at least 1e-6, top_p 1.0 when unset and at least 1e-5
    const temperature = this.temperatureOf(g);
    const topP = Math.max(pick("top_p") ?? 1.0, 1e-5);
    if (!this.ids) {
      tvm.beginScope();
      try {
        this.ids = tvm.detachFromCurrentScope(tvm.empty([1], "int32", p.device));
        this.temperature = tvm.detachFromCurrentScope(tvm.empty([1], "float32", p.device));
        this.topP = tvm.detachFromCurrentScope(tvm.empty([1], "float32", p.device));
      } finally {
        tvm.endScope();
      }
    }
    if (this.settings[0] !== temperature || this.settings[1] !== topP) {
      (this.temperature as TvmTensor).copyFrom([temperature]);
      (this.topP as TvmTensor).copyFrom([topP]);
      this.settings = [temperature, topP];
    }
  }

  /** Encodes and submits one decode step on `this.ids`; its sampled id becomes `this.ids` and is read back. */
  private launch(): Step {
    const p = this.p, tvm = p.tvm;
    tvm.beginScope();
    try {
      const emb = p.embed(this.ids as TvmTensor, p.params);
      const seq = tvm.makeShapeTuple([0]), len = tvm.makeShapeTuple([1]);
      const states = p.getActiveKVStates();
      for (const s of states) p.fKVCacheBeginForward(s, seq, len);
      const ret = p.invokeDecode(emb.view([1].concat(emb.shape)));
      for (let i = states.length - 1; i >= 0; --i) p.fKVCacheEndForward(states[i]);
      p.filledKVCacheLength += 1;
      const logits = ret.get(0).view([1, 1, p.fullVocabSize]);
      let sampled: TvmTensor;
      if (this.greedy) {
        // the uniform web-llm's loop draws each step, drawn here too so later answers sample alike
        if (tvm.rng && typeof tvm.rng.randomFloat === "function") tvm.rng.randomFloat();
        else tvm.uniform([1], 0.0, 1.0, p.device);
        sampled = (this.fargmax as (logits: TvmTensor) => TvmTensor)(logits);
      } else {
        const probs = p.fsoftmaxWithTemperature(logits, this.temperature as TvmTensor).view([1, p.fullVocabSize]);
        const sorted = p.fargsortProbs(probs);
        const uniform = tvm.uniform([1], 0.0, 1.0, p.device);
        sampled = p.fsampleWithTopP(sorted.get(0), sorted.get(1), uniform, p.sampleIndicesDevice, this.topP as TvmTensor);
      }
      (this.ids as TvmTensor).copyFrom(sampled); // on the GPU: the next step's input
      const buf = this.free.pop() ?? this.ctx.device.createBuffer({ size: 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      let enc = this.ctx.pendingEncoder;
      if (!enc) {
        enc = this.ctx.device.createCommandEncoder();
        this.ctx.pendingEncoder = enc;
      }
      enc.copyBufferToBuffer(this.ctx.gpuBufferFromPtr(sampled.getDataPtr()), sampled.byteOffset, buf, 0, 4);
      this.ctx.flushCommands();
      const read = buf.mapAsync(GPUMapMode.READ).then(() => {
        const id = new Int32Array(buf.getMappedRange(0, 4))[0];
        buf.unmap();
        if (this.free.length < RING) this.free.push(buf);
        else buf.destroy();
        return id;
      });
      return { buf, read };
    } finally {
      tvm.endScope();
    }
  }

  /** Drops the step in flight (its id is not used); with `pop`, its position leaves the KV cache. */
  private discard(pop: boolean): void {
    const step = this.inflight;
    if (!step) return;
    this.inflight = null;
    step.read.catch(() => undefined); // its buffer comes back to the ring when the read resolves
    if (pop) {
      const p = this.p, tvm = p.tvm;
      tvm.beginScope();
      try {
        tvm.getGlobalFunc("vm.builtin.kv_state_popn")(p.kvCache, tvm.scalar(0, "int64"), tvm.scalar(1, "int32"));
      } finally {
        tvm.endScope();
      }
      p.filledKVCacheLength -= 1;
    }
  }
}
