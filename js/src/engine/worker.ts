// The engine's Web Worker: runs web-llm's MLCEngine and answers the host's messages (see host.ts for the other end).
// Started from a Blob URL of this bundle, so nothing is fetched from a CDN; model files are already in
// Cache Storage (model_files.ts) under the URLs the model record names.
import { MLCEngine, prebuiltAppConfig } from "@mlc-ai/web-llm";
import type { AppConfig, ModelRecord, InitProgressReport } from "@mlc-ai/web-llm";
import { probeGPU as probeAdapter } from "./adapter";
import { errorPayload } from "./errors";
import { checkKvCacheFits, configUrlFor } from "./kv_fit";
import { CpuEngine, type CpuModelRecord } from "./cpu/engine";
import type { GPUInfo, ToWorker, FromWorker } from "./wire";
import { LogprobRecorder } from "./logprobs";
import { EngineError, type Choice, type ResponseFormat } from "./types";
import { compactJSONGrammar } from "./json_grammar";
import { structuralTagOf } from "./tool_grammar";
import { foldSystemMessage } from "./cpu/template";
import type { LogitProcessor } from "@mlc-ai/web-llm";
import type { DispatchStats } from "./dispatch";
import { hasSlidingWindow, type ShaderStats } from "./shaders";
import { loaded as dispatchOfLoad, nextLoad } from "./webllm_dispatch";
import { decodeLoop, installAsyncDecode, setDecodeLoop } from "./async_decode";
import { cachedTokens, forgetPrefix, installPrefixCache, setPromptCache } from "./prefix_cache";

// The worker's global scope, typed by what is used here (the DOM lib has no worker scope type).
const scope = globalThis as unknown as {
  postMessage(msg: unknown, transfer: Transferable[]): void;
  onmessage: ((ev: MessageEvent<ToWorker>) => void) | null;
  navigator: Navigator;
};

// Models held in this worker, each by the key the host gave it (host.ts specKey): a page may hold several at once
// (one MLCEngine per WebGPU model, each with its own device and KV cache; one CpuEngine per CPU model). A
// request names the model it is for; nothing answers with "whatever was loaded last".
type Slot =
  | { backend: "webgpu"; modelId: string; mlc: MLCEngine; dispatch: string; stats: () => DispatchStats | null; decodeLoop: string; shaders: () => ShaderStats }
  | { backend: "cpu"; modelId: string; cpu: CpuEngine };
const slots = new Map<string, Slot>();
let gpu: GPUInfo | null = null;
// The request being generated, and whether the host asked it to stop (a stop that arrives before web-llm
// starts decoding would otherwise be forgotten: web-llm clears its interrupt flag when a request begins).
let current: { id: number; stop: boolean; slot: Slot } | null = null;

function post(msg: FromWorker, transfer: Transferable[] = []) {
  scope.postMessage(msg, transfer);
}

const probeGPU = () => probeAdapter(scope.navigator);

function appConfigFor(record: ModelRecord | null, modelId: string): AppConfig {
  if (record) return { model_list: [record], cacheBackend: "cache" } as AppConfig;
  const found = prebuiltAppConfig.model_list.find((m) => m.model_id === modelId);
  if (!found) throw Object.assign(new Error(`no prebuilt MLC model is named ${modelId}`), { name: "ModelNotFoundError" });
  return prebuiltAppConfig;
}

// web-llm reports "...[i/n]: 12MB fetched. 40% completed, 3 secs elapsed..." while downloading.
function progressOf(r: InitProgressReport) {
  const mb = /(\d+)MB (fetched|loaded)/.exec(r.text);
  const phase = /Fetching/.test(r.text) ? "fetch" : /Finish loading/.test(r.text) ? "done" : /shader|pipeline|Loading GPU/i.test(r.text) ? "compile" : "load";
  const bytes_done = mb ? Number(mb[1]) * 1024 * 1024 : undefined;
  const bytes_total = bytes_done !== undefined && r.progress > 0 ? Math.round(bytes_done / r.progress) : undefined;
  const eta_s = r.progress > 0.01 && r.progress < 1 ? (r.timeElapsed * (1 - r.progress)) / r.progress : undefined;
  return { progress: r.progress, phase, bytes_done, bytes_total, elapsed_s: r.timeElapsed, eta_s, text: r.text } as const;
}

const NO_ADAPTER: GPUInfo = { vendor: "", architecture: "", description: "no WebGPU adapter", is_fallback: false, features: [] };

async function loadOnCpu(id: number, key: string, modelId: string, record: ModelRecord | null) {
  const t0 = performance.now();
  if (!record) throw Object.assign(new Error(`${modelId} has no CPU build: the CPU path needs a local model folder`), { name: "ModelNotFoundError" });
  await unload(key);
  const cpu = new CpuEngine();
  await cpu.load(record as unknown as CpuModelRecord, (p) => post({ type: "progress", id, progress: p }));
  slots.set(key, { backend: "cpu", modelId, cpu });
  gpu = gpu ?? (await probeGPU().catch(() => NO_ADAPTER));
  post({ type: "loaded", id, model: modelId, gpu, load_s: (performance.now() - t0) / 1000, device: "cpu", prompt_cache: "on" });
}

/**
 * The KV cache must fit one GPU buffer per layer (kv_fit.ts): checked here for every model, local, URL or
 * prebuilt, on the config web-llm is about to read (its cache, else the server; the record's overrides on top).
 * A config that passes is left in web-llm's config cache, so the server is asked for it once; a refused one is not.
 */
async function checkKvCache(modelId: string, appConfig: AppConfig): Promise<Record<string, any> | null> {
  const rec = appConfig.model_list.find((m) => m.model_id === modelId);
  if (!rec) return null; // web-llm names the missing id
  const url = configUrlFor(rec.model);
  let cfg: Record<string, any>;
  let fresh: Response | null = null;
  try {
    const cache = await caches.open("webllm/config");
    let r = await cache.match(url);
    if (!r) {
      r = await fetch(url);
      if (!r.ok) return null; // web-llm fetches it again and reports the failure
      fresh = r.clone();
    }
    cfg = await r.json();
  } catch {
    return null; // unreachable or unreadable: web-llm reports it
  }
  const merged = { ...cfg, ...((rec as { overrides?: object }).overrides ?? {}) };
  try {
    checkKvCacheFits(modelId, merged, gpu);
  } catch (err) {
    // Not kept: a corrected copy on the server is read next time.
    await (await caches.open("webllm/config")).delete(url).catch(() => undefined);
    throw err;
  }
  if (fresh) await (await caches.open("webllm/config")).put(url, fresh).catch(() => undefined);
  return merged;
}

/** Frees the model held under `key` (its GPU buffers or wasm memory), if any. */
async function unload(key: string): Promise<void> {
  const slot = slots.get(key);
  if (!slot) return;
  slots.delete(key);
  if (slot.backend === "cpu") slot.cpu.unload();
  else {
    try {
      await slot.mlc.unload();
    } catch {
      /* already disposed with its device */
    }
  }
}

async function load(id: number, key: string, modelId: string, record: ModelRecord | null, dispatch?: "batched" | "upstream",
  deferShaders?: string[]) {
  const t0 = performance.now();
  gpu = gpu ?? (await probeGPU());
  const appConfig = appConfigFor(record, modelId);
  const cfg = await checkKvCache(modelId, appConfig); // refused here, the models loaded before stay loaded
  await unload(key);
  const onProgress = (r: InitProgressReport) => post({ type: "progress", id, progress: progressOf(r) });
  // One MLCEngine per model: each holds its own pipeline, KV cache and conversation.
  const mlc = new MLCEngine({ appConfig, initProgressCallback: onProgress });
  nextLoad(dispatch, { windowed: hasSlidingWindow(cfg), extra: deferShaders });
  try {
    await mlc.reload(modelId);
  } catch (err) {
    // A failed load can leave web-llm's engine on a dead device (an allocation the GPU refused makes web-llm
    // destroy the device): drop it; its buffers go with the device.
    try {
      await mlc.unload();
    } catch {
      /* already disposed with its device */
    }
    throw err;
  }
  const d = dispatchOfLoad();
  // prompt caching (prefix_cache.ts), installed first: the decode loop's wrappers then run around it, so a step it
  // drops has left the cache before the prompt cache reads what the cache holds
  const promptCache = installPrefixCache(rawPipelineOf(mlc, modelId));
  // web-llm's decode loop with the sampled ids read back asynchronously (async_decode.ts), or "sync: why"
  const loop = installAsyncDecode(rawPipelineOf(mlc, modelId));
  slots.set(key, { backend: "webgpu", modelId, mlc, dispatch: d.dispatch, stats: d.stats, decodeLoop: loop, shaders: d.shaders });
  // A prebuilt record says how much GPU memory it needs (local folders: the host counts their files).
  const vram = Number(appConfig.model_list.find((m) => m.model_id === modelId)?.vram_required_MB ?? 0);
  post({ type: "loaded", id, model: modelId, gpu, load_s: (performance.now() - t0) / 1000, device: "webgpu",
    bytes: vram > 0 ? vram * 2 ** 20 : undefined, dispatch: d.dispatch, decode_loop: loop, prompt_cache: promptCache, shaders: d.shaders() });
}

function slotFor(key: string): Slot {
  const slot = slots.get(key);
  if (!slot) {
    throw Object.assign(new Error(`the model this request is for (${key.split("|")[0]}) is not loaded in the page: load it first`),
      { name: "ModelNotLoadedError" });
  }
  return slot;
}

/** web-llm's internals this worker reaches into for logprobs: the pipeline of a loaded model (its tokenizer, the
 * logit-processor hook, the ids it emitted). Pinned web-llm version; a missing field is named, not guessed at. */
interface Pipeline {
  tokenizer: { decode(ids: Int32Array): string };
  logitProcessor?: LogitProcessor;
  outputIds: number[];
  config?: { conv_template?: { system_role?: boolean } };
  getCurRoundGrammarInitTotalTime?(): number;
  getCurRoundGrammarPerTokenTotalTime?(): number;
}

function rawPipelineOf(mlc: MLCEngine, modelId: string): unknown {
  return (mlc as unknown as { loadedModelIdToPipeline?: Map<string, unknown> }).loadedModelIdToPipeline?.get(modelId) ?? null;
}

function pipelineOf(slot: Extract<Slot, { backend: "webgpu" }>, required: false): Pipeline | null;
function pipelineOf(slot: Extract<Slot, { backend: "webgpu" }>, required?: true): Pipeline;
function pipelineOf(slot: Extract<Slot, { backend: "webgpu" }>, required = true): Pipeline | null {
  const p = rawPipelineOf(slot.mlc, slot.modelId) as Pipeline | null;
  if (!p || !p.tokenizer || !Array.isArray(p.outputIds)) {
    if (!required) return null;
    throw new EngineError("unsupported", "logprobs: this web-llm build does not expose its pipeline (tokenizer, logit hook); ask without logprobs");
  }
  return p;
}

/** OpenAI's response_format as web-llm 0.2.85 takes it: JSON (json_object, json_schema) as the grammar of one-line
 * JSON (json_grammar.ts; the CPU engine compiles the same), tool calls a structural tag (tool_grammar.ts). */
async function webllmFormat(f: ResponseFormat | undefined): Promise<Record<string, unknown> | undefined> {
  if (!f || f.type === "text") return undefined;
  if (f.type === "json_object" || f.type === "json_schema") {
    // OpenAI's JSON mode asks for a JSON object, which is what the schema {"type": "object"} allows
    const schema = f.type === "json_object" ? f.schema ?? { type: "object" } : f.json_schema?.schema ?? { type: "object" };
    try {
      return { type: "grammar", grammar: await compactJSONGrammar(schema) };
    } catch (e) {
      throw new EngineError("bad-request", `response_format ${f.type} could not be compiled: ${String((e as Error)?.message ?? e)}`,
        { parameter: "response_format" });
    }
  }
  if (f.type === "grammar") return { type: "grammar", grammar: f.grammar };
  if (f.type === "tool_calls") return { type: "structural_tag", structural_tag: await structuralTagOf(f) };
  throw new EngineError("bad-request", `response_format type ${(f as { type?: string }).type} is not one of text, json_object, json_schema, grammar`);
}

/** One choice on web-llm, streamed (deltas go to the host when `stream`). */
async function generateOne(id: number, msg: Extract<ToWorker, { type: "generate" }>, slot: Extract<Slot, { backend: "webgpu" }>,
  seed: number | undefined, stream: boolean) {
  const engine = slot.mlc;
  const s = msg.settings;
  const request = {
    messages: foldSystemMessage(msg.messages, pipelineOf(slot, false)?.config?.conv_template),
    stream: true as const,
    stream_options: { include_usage: true },
    temperature: s.temperature,
    top_p: s.top_p,
    max_tokens: s.max_tokens,
    seed,
    stop: s.stop && s.stop.length ? s.stop : undefined,
    frequency_penalty: s.frequency_penalty,
    presence_penalty: s.presence_penalty,
    repetition_penalty: s.repetition_penalty,
    ignore_eos: s.ignore_eos,
    logit_bias: s.logit_bias && Object.keys(s.logit_bias).length ? s.logit_bias : undefined,
    response_format: await webllmFormat(s.response_format),
  };
  let recorder: LogprobRecorder | null = null;
  let pipeline: Pipeline | null = null;
  if (s.logprobs) {
    pipeline = pipelineOf(slot);
    const p = pipeline;
    const rec = new LogprobRecorder(s.top_logprobs ?? 0, (t) => p.tokenizer.decode(Int32Array.of(t)));
    recorder = rec;
    // web-llm copies the logits to the CPU for this hook at every step; only while logprobs are asked for.
    p.logitProcessor = {
      processLogits: (logits: Float32Array) => (rec.observe(logits), logits),
      processSampledToken: (t: number) => rec.take(t),
      resetState: () => undefined,
    };
  }
  let text = "";
  let finish = "stop";
  let usage: Record<string, unknown> | undefined;
  let emitted = 0;
  try {
    const chunks = await engine.chat.completions.create(request as Parameters<typeof engine.chat.completions.create>[0] & { stream: true });
    for await (const chunk of chunks) {
      if (current?.stop) engine.interruptGenerate();
      const choice = chunk.choices[0];
      const delta = choice?.delta?.content;
      if (delta) {
        text += delta;
        if (stream) post({ type: "delta", id, text: delta });
      }
      if (choice?.finish_reason) finish = choice.finish_reason;
      if (chunk.usage) usage = chunk.usage as unknown as Record<string, unknown>;
    }
    // web-llm counts decode steps as completion tokens (the token sampled after prefill is left out, the stop
    // token's step is in); the ids it emitted are the answer's tokens, as the CPU engine counts them.
    const p = pipeline ?? pipelineOf(slot, false);
    const ids = p?.outputIds;
    emitted = ids ? ids.length : 0;
    if (ids && usage) {
      usage.completion_tokens = ids.length;
      usage.total_tokens = Number(usage.prompt_tokens ?? 0) + ids.length;
    }
    const cached = cachedTokens(rawPipelineOf(slot.mlc, slot.modelId));
    if (usage && cached !== null) usage.cached_tokens = cached;
    // web-llm reports the grammar's times for json_object and grammar only: read them off the pipeline for every
    // constrained answer (the structural tags of tool calls too)
    const extra = usage?.extra as Record<string, number> | undefined;
    if (request.response_format && extra && p?.getCurRoundGrammarInitTotalTime && p.getCurRoundGrammarPerTokenTotalTime) {
      extra.grammar_init_s = p.getCurRoundGrammarInitTotalTime();
      extra.grammar_per_token_s = p.getCurRoundGrammarPerTokenTotalTime() / Math.max(1, emitted);
    }
  } finally {
    if (pipeline) pipeline.logitProcessor = undefined;
  }
  // The hook also saw the stop token's step: keep the tokens the answer is made of.
  const logprobs = recorder ? { content: recorder.records.slice(0, emitted) } : undefined;
  return { text, finish, usage, logprobs };
}

async function generate(id: number, msg: Extract<ToWorker, { type: "generate" }>, slot: Extract<Slot, { backend: "webgpu" }>) {
  current = { id, stop: false, slot };
  const s = msg.settings;
  const n = Math.max(1, s.n ?? 1);
  const choices: Choice[] = [];
  const total = { prompt_tokens: 0, completion_tokens: 0, cached_tokens: undefined as number | undefined };
  let extra: Record<string, number> = {};
  const raw = rawPipelineOf(slot.mlc, slot.modelId);
  // a page may ask for web-llm's own loop (tests and the GPU bench compare both): msg.decode_loop "sync"
  setDecodeLoop(raw, msg.decode_loop === "sync" ? "sync" : "async");
  setPromptCache(raw, msg.prompt_cache !== "off");
  try {
    for (let i = 0; i < n && !current?.stop; i++) {
      const r = await generateOne(id, msg, slot, s.seed === undefined ? undefined : s.seed + i, i === 0);
      choices.push({ index: i, text: r.text, finish_reason: r.finish, ...(r.logprobs ? { logprobs: r.logprobs } : {}) });
      total.prompt_tokens += Number(r.usage?.prompt_tokens ?? 0);
      total.completion_tokens += Number(r.usage?.completion_tokens ?? 0);
      if (r.usage?.cached_tokens !== undefined) total.cached_tokens = (total.cached_tokens ?? 0) + Number(r.usage.cached_tokens);
      if (i === 0) extra = (r.usage?.extra ?? {}) as Record<string, number>;
    }
  } finally {
    const stopped = current?.stop;
    current = null;
    if (stopped) {
      if (choices.length) choices[choices.length - 1].finish_reason = "abort";
      else choices.push({ index: 0, text: "", finish_reason: "abort" });
    }
  }
  post({
    type: "done",
    id,
    text: choices[0].text,
    finish_reason: choices[0].finish_reason,
    choices,
    usage: {
      prompt_tokens: total.prompt_tokens,
      completion_tokens: total.completion_tokens,
      total_tokens: total.prompt_tokens + total.completion_tokens,
      ...(total.cached_tokens !== undefined ? { cached_tokens: total.cached_tokens } : {}),
      prefill_tokens_per_s: extra.prefill_tokens_per_s,
      decode_tokens_per_s: extra.decode_tokens_per_s,
      time_to_first_token_s: extra.time_to_first_token_s,
      e2e_latency_s: extra.e2e_latency_s,
      grammar_init_s: extra.grammar_init_s,
      grammar_per_token_s: extra.grammar_per_token_s,
      decode_loop: decodeLoop(raw) ?? slot.decodeLoop,
    },
    dispatch_stats: slot.stats(),
    shaders: slot.shaders(),
  });
}

scope.onmessage = async (ev: MessageEvent<ToWorker>) => {
  const msg = ev.data;
  try {
    switch (msg.type) {
      case "load":
        if (msg.device === "cpu") await loadOnCpu(msg.id, msg.key, msg.model_id, msg.record as ModelRecord | null);
        else await load(msg.id, msg.key, msg.model_id, msg.record as ModelRecord | null, msg.dispatch, msg.defer_shaders);
        break;
      case "unload":
        await unload(msg.key);
        post({ type: "unloaded", id: msg.id });
        break;
      case "generate": {
        const slot = slotFor(msg.key);
        if (slot.backend === "cpu") {
          const id = msg.id;
          current = { id, stop: false, slot };
          try {
            const r = await slot.cpu.generate(msg.messages, msg.settings, (text) => post({ type: "delta", id, text }));
            post({ type: "done", id, text: r.text, finish_reason: r.finish_reason, usage: r.usage, choices: r.choices });
          } finally {
            current = null;
          }
        } else await generate(msg.id, msg, slot);
        break;
      }
      case "stop":
        if (current) {
          current.stop = true;
          if (current.slot.backend === "cpu") current.slot.cpu.stop();
          else current.slot.mlc.interruptGenerate();
        }
        break;
      case "reset": {
        const slot = msg.key ? slots.get(msg.key) : undefined;
        for (const s of slot ? [slot] : slots.values()) {
          if (s.backend === "cpu") s.cpu.reset();
          else {
            await s.mlc.resetChat();
            forgetPrefix(rawPipelineOf(s.mlc, s.modelId)); // a reset empties the KV cache, prompt caching or not
          }
        }
        post({ type: "reset-done", id: msg.id });
        break;
      }
      case "gpu":
        gpu = gpu ?? (await probeGPU());
        post({ type: "gpu-info", id: msg.id, gpu });
        break;
    }
  } catch (err) {
    post({ type: "error", id: msg.id, ...errorPayload(err) });
  }
};
post({ type: "hello" });
