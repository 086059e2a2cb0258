// The CPU engine: the same job as web-llm's MLCEngine (load a model folder, chat with streaming, stop, reset),
// for a model library built for the page's CPU (wasm32 + SIMD128). Runs inside the engine worker; the worker
// sends it the same load/generate/stop/reset requests it would send web-llm (see ../worker.ts).
//
// Model files are read from the Cache Storage caches the host filled (model_files.ts): mlc-chat-config.json
// from webllm/config, the library from webllm/wasm, tokenizer and weights from webllm/model.
import "@mlc-ai/web-tokenizers";
import type { Tokenizer as TokenizerType } from "@mlc-ai/web-tokenizers";
import { cpuBuildLabel } from "./features";
import { CpuModel, CpuModelError } from "./model";
import { foldSystemMessage, renderPrompt, type ConvTemplate } from "./template";
import { applyPenalties, makeRng, sample, type SampleSettings } from "./sampler";
import { EngineError, type ChatMessage, type Choice, type GenerateResult, type GenerateSettings, type LoadProgress } from "../types";
import { LogprobRecorder } from "../logprobs";
import { CpuGrammars, applyBitmask, type TokenizerInfoConfig } from "./grammar";

/** The web-llm model record the host sends (model: folder base URL ending in "/", model_lib: library URL). */
export interface CpuModelRecord {
  model: string;
  model_id: string;
  model_lib: string;
  overrides?: Record<string, unknown>;
}

interface ChatConfig {
  vocab_size?: number;
  context_window_size: number;
  prefill_chunk_size?: number;
  temperature?: number;
  top_p?: number;
  presence_penalty?: number;
  frequency_penalty?: number;
  repetition_penalty?: number;
  tokenizer_files?: string[];
  conv_template: ConvTemplate;
  eos_token_id?: number | number[];
  quantization?: string;
  tokenizer_info?: TokenizerInfoConfig;
}

// web-tokenizers ships a UMD file in a "type": "module" package: bundlers see no ESM exports, and the
// UMD wrapper, finding no CommonJS/AMD, puts the classes on globalThis.tokenizers.
type Tokenizer = TokenizerType;
const Tokenizer = (globalThis as unknown as { tokenizers: { Tokenizer: typeof TokenizerType } }).tokenizers?.Tokenizer;

/** What this engine runs on, for the widget to show. */
export function cpuBackend(lib: string): string {
  return `CPU (${cpuBuildLabel(/relaxed-simd/.test(lib) ? "relaxed-simd" : "simd128")}, 1 thread)`;
}

async function fromCache(scope: string, url: string): Promise<Response> {
  try {
    const hit = await (await caches.open(scope)).match(url);
    if (hit) return hit;
  } catch {
    // no Cache Storage (opaque origin): fall through to the network
  }
  const r = await fetch(url);
  if (!r.ok) throw new EngineError("bad-artifact", `model file ${url} is neither in the page's cache nor reachable (HTTP ${r.status})`);
  return r;
}

// Let the worker's message queue run (a stop request) between tokens without the 4 ms clamp of setTimeout.
function yieldToEvents(): Promise<void> {
  return new Promise((resolve) => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => {
      ch.port1.close();
      resolve();
    };
    ch.port2.postMessage(null);
  });
}

function commonPrefix(a: number[], b: number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/** Length of the longest suffix of `text` that is a proper prefix of one of `stops` (held back while streaming). */
function pendingStopOverlap(text: string, stops: string[]): number {
  let best = 0;
  for (const s of stops) {
    for (let k = Math.min(s.length - 1, text.length); k > best; k--) {
      if (text.endsWith(s.slice(0, k))) {
        best = k;
        break;
      }
    }
  }
  return best;
}

export class CpuEngine {
  loaded: string | null = null;
  private model: CpuModel | null = null;
  private tokenizer: Tokenizer | null = null;
  private config: ChatConfig | null = null;
  /** Token ids whose keys/values are in the KV cache (to reuse the conversation's prefix). */
  private cachedTokens: number[] = [];
  private stopRequested = false;
  /** The grammar compiler for response_format, made on first use. */
  private grammars: CpuGrammars | null = null;

  async load(record: CpuModelRecord, onProgress: (p: LoadProgress) => void): Promise<void> {
    const t0 = performance.now();
    const report = (progress: number, phase: LoadProgress["phase"], text: string) =>
      onProgress({ progress, phase, elapsed_s: (performance.now() - t0) / 1000, text });
    this.unload();
    const base = record.model.endsWith("/") ? record.model : record.model + "/";
    report(0, "load", "reading the model's config");
    const config = (await (await fromCache("webllm/config", base + "mlc-chat-config.json")).json()) as ChatConfig;
    Object.assign(config, record.overrides ?? {});
    if (!config.conv_template || typeof config.conv_template !== "object") {
      throw new EngineError("bad-model", "mlc-chat-config.json has no JSON conv_template: rebuild the folder with webllm-widget");
    }
    report(0.02, "load", "loading the tokenizer");
    const tokFile = config.tokenizer_files?.find((f) => f.endsWith("tokenizer.json")) ?? "tokenizer.json";
    const tokenizer = await Tokenizer.fromJSON(await (await fromCache("webllm/model", base + tokFile)).arrayBuffer());
    report(0.05, "load", "instantiating the CPU model library");
    const wasm = await (await fromCache("webllm/wasm", record.model_lib)).arrayBuffer();
    let model: CpuModel;
    try {
      model = await CpuModel.create(wasm, {
        tensorCacheUrl: base,
        cacheScope: "webllm/model",
        contextWindowSize: config.context_window_size,
        onProgress: (f, text) => report(0.05 + 0.95 * f, "load", text),
      });
    } catch (e) {
      tokenizer.dispose();
      if (e instanceof CpuModelError) throw new EngineError(e.code as EngineError["code"], e.message);
      const msg = String((e as Error)?.message ?? e);
      if (/memory|allocation/i.test(msg)) throw new EngineError("out-of-memory", `the model does not fit in the page's memory on the CPU path: ${msg}`);
      throw new EngineError("bad-artifact", `the CPU model could not be loaded: ${msg}`);
    }
    if (model.meta.quantization === "q4f16_1") {
      model.dispose();
      tokenizer.dispose();
      throw new EngineError("bad-model", "this library was built for WebGPU (float16): build the model with device='cpu'");
    }
    this.model = model;
    this.tokenizer = tokenizer;
    this.config = config;
    this.cachedTokens = [];
    this.loaded = record.model_id;
    report(1, "done", `loaded ${record.model_id} on the ${cpuBackend(record.model_lib)}`);
  }

  /** Free the model (wasm memory, weights) and the tokenizer. */
  unload(): void {
    this.grammars?.dispose();
    this.grammars = null;
    this.model?.dispose();
    this.tokenizer?.dispose();
    this.model = null;
    this.tokenizer = null;
    this.config = null;
    this.loaded = null;
    this.cachedTokens = [];
  }

  stop(): void {
    this.stopRequested = true;
  }

  reset(): void {
    this.model?.reset();
    this.cachedTokens = [];
  }

  /** Put `prompt` into the KV cache, reusing the longest prefix already there; returns the last logits and how
   * many tokens ran (only those count as prefilled, as in web-llm's usage). */
  private prefill(prompt: number[]): { logits: Float32Array; ran: number } {
    const model = this.model!;
    let keep = commonPrefix(this.cachedTokens, prompt);
    if (keep === prompt.length) keep -= 1; // at least one token must run to get logits
    if (keep < this.cachedTokens.length) {
      if (!model.popTo(keep)) {
        model.reset();
        keep = 0;
      }
    }
    const logits = model.forward(prompt.slice(keep));
    this.cachedTokens = prompt.slice();
    return { logits, ran: prompt.length - keep };
  }

  /**
   * Answers `messages`: `settings.n` choices one after another (choice i seeded with seed + i), the first one
   * streamed through `onDelta`. response_format is matched by xgrammar (grammar.ts).
   */
  async generate(messages: ChatMessage[], settings: GenerateSettings, onDelta?: (d: string) => void): Promise<GenerateResult> {
    const n = Math.max(1, settings.n ?? 1);
    const choices: Choice[] = [];
    const usage = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 } as GenerateResult["usage"];
    let first: GenerateResult | null = null;
    for (let i = 0; i < n; i++) {
      const seed = settings.seed === undefined ? undefined : settings.seed + i;
      const r = await this.generateOne(messages, { ...settings, seed }, i === 0 ? onDelta : undefined);
      first = first ?? r;
      choices.push({ index: i, text: r.text, finish_reason: r.finish_reason, ...(r.choices?.[0]?.logprobs ? { logprobs: r.choices[0].logprobs } : {}) });
      usage.prompt_tokens += r.usage.prompt_tokens;
      usage.completion_tokens += r.usage.completion_tokens;
      usage.cached_tokens = (usage.cached_tokens ?? 0) + (r.usage.cached_tokens ?? 0);
      if (r.finish_reason === "abort") break;
    }
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
    const f = first!;
    return { text: f.text, finish_reason: f.finish_reason, choices,
      usage: { ...f.usage, prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens, total_tokens: usage.total_tokens,
        cached_tokens: usage.cached_tokens } };
  }

  private async generateOne(messages: ChatMessage[], settings: GenerateSettings, onDelta?: (d: string) => void): Promise<GenerateResult> {
    const model = this.model;
    const tok = this.tokenizer;
    const cfg = this.config;
    if (!model || !tok || !cfg) throw new EngineError("bad-model", "no model is loaded: load one first");
    this.stopRequested = false;
    const t0 = performance.now();
    const conv = cfg.conv_template;
    const prompt = Array.from(tok.encode(renderPrompt(conv, foldSystemMessage(messages, conv))));
    const room = model.contextWindowSize - prompt.length;
    if (room < 1) {
      throw new EngineError("context-overflow", `the prompt has ${prompt.length} tokens but the context window holds ${model.contextWindowSize}: shorten the conversation or reset`);
    }
    const maxTokens = Math.min(settings.max_tokens && settings.max_tokens > 0 ? settings.max_tokens : room, room);
    const s: SampleSettings = {
      temperature: settings.temperature ?? cfg.temperature ?? 0.7,
      top_p: settings.top_p ?? cfg.top_p ?? 1,
      presence_penalty: settings.presence_penalty ?? cfg.presence_penalty,
      frequency_penalty: settings.frequency_penalty ?? cfg.frequency_penalty,
      repetition_penalty: settings.repetition_penalty ?? cfg.repetition_penalty,
    };
    const rng = makeRng(settings.seed);
    const eos = cfg.eos_token_id === undefined ? [] : Array.isArray(cfg.eos_token_id) ? cfg.eos_token_id : [cfg.eos_token_id];
    const stopIds = new Set<number>([...(conv.stop_token_ids ?? []), ...eos]);
    const stopStrs = [...(conv.stop_str ?? []), ...(settings.stop ?? [])].filter((x) => x.length > 0);
    const vocab = Math.min(tok.getVocabSize() || Infinity, cfg.vocab_size ?? Infinity);
    const bias = Object.entries(settings.logit_bias ?? {}).map(([k, v]) => [Number(k), Number(v)] as const);
    const recorder = settings.logprobs ? new LogprobRecorder(settings.top_logprobs ?? 0, (t) => tok.decode(Int32Array.of(t))) : null;
    const fmt = settings.response_format;
    if (fmt && fmt.type !== "text" && !this.grammars) {
      const size = cfg.vocab_size ?? tok.getVocabSize();
      this.grammars = new CpuGrammars(() => Array.from({ length: tok.getVocabSize() }, (_, i) => tok.idToToken(i)), size,
        [...stopIds], cfg.tokenizer_info);
    }
    const tg = performance.now();
    const matcher = fmt && fmt.type !== "text" ? await this.grammars!.matcher(fmt) : null;
    const grammarInitS = (performance.now() - tg) / 1000;
    let grammarS = 0; // the mask and the token check, over the answer

    const pre = this.prefill(prompt);
    let logits = pre.logits;
    const t1 = performance.now();
    const out: number[] = [];
    const counts = new Map<number, number>();
    let text = "";
    let emitted = 0;
    let finish: GenerateResult["finish_reason"] = "length";
    let tFirst = 0;
    let decodeSteps = 0;
    while (out.length < maxTokens) {
      if (this.stopRequested) {
        finish = "abort";
        break;
      }
      // The grammar's mask first (web-llm applies it on the GPU before its logit hook sees the logits).
      if (matcher) {
        const tm = performance.now();
        applyBitmask(logits, await matcher.getNextTokenBitmask());
        grammarS += performance.now() - tm;
      }
      recorder?.observe(logits); // the model's own distribution, before bias and penalties (as on WebGPU)
      for (const [t, b] of bias) if (t >= 0 && t < logits.length) logits[t] += b;
      applyPenalties(logits, counts, s);
      const id = sample(logits, s, rng, Number.isFinite(vocab) ? vocab : logits.length);
      if (stopIds.has(id)) {
        finish = "stop";
        break;
      }
      if (matcher) {
        const tm = performance.now();
        if (!matcher.acceptToken(id)) throw new EngineError("error", `the grammar matcher refused token ${id}, which its own mask allowed`);
        grammarS += performance.now() - tm;
      }
      recorder?.take(id);
      out.push(id);
      counts.set(id, (counts.get(id) ?? 0) + 1);
      const full = tok.decode(Int32Array.from(out));
      let cut = -1;
      for (const ss of stopStrs) {
        const at = full.indexOf(ss);
        if (at >= 0 && (cut < 0 || at < cut)) cut = at;
      }
      if (cut >= 0) {
        text = full.slice(0, cut);
        if (text.length > emitted) onDelta?.(text.slice(emitted));
        emitted = text.length;
        finish = "stop";
        break;
      }
      text = full;
      // Hold back an incomplete UTF-8 sequence and anything that may be the start of a stop string.
      const safe = full.endsWith("\uFFFD") ? emitted : full.length - pendingStopOverlap(full, stopStrs);
      if (safe > emitted) {
        onDelta?.(full.slice(emitted, safe));
        emitted = safe;
      }
      if (out.length === 1) tFirst = performance.now();
      if (out.length >= maxTokens) break;
      await yieldToEvents();
      if (this.stopRequested) {
        finish = "abort";
        break;
      }
      logits = model.forward([id]);
      this.cachedTokens.push(id);
      decodeSteps++;
    }
    if (finish !== "stop" && text.length > emitted && !text.endsWith("\uFFFD")) {
      onDelta?.(text.slice(emitted));
      emitted = text.length;
    }
    matcher?.dispose();
    const t2 = performance.now();
    const decodeS = tFirst ? (t2 - tFirst) / 1000 : 0;
    return {
      text: text.slice(0, emitted),
      finish_reason: finish,
      ...(recorder ? { choices: [{ index: 0, text: text.slice(0, emitted), finish_reason: finish, logprobs: { content: recorder.records } }] } : {}),
      usage: {
        // Tokens prefilled by this request (a conversation's earlier turns stay in the KV cache), as web-llm counts.
        prompt_tokens: pre.ran,
        cached_tokens: prompt.length - pre.ran, // the conversation's prefix already in the KV cache
        completion_tokens: out.length,
        total_tokens: pre.ran + out.length,
        prefill_tokens_per_s: pre.ran / Math.max(1e-6, (t1 - t0) / 1000),
        decode_tokens_per_s: decodeSteps > 0 && decodeS > 0 ? decodeSteps / decodeS : undefined,
        time_to_first_token_s: ((tFirst || t2) - t0) / 1000,
        e2e_latency_s: (t2 - t0) / 1000,
        ...(matcher ? { grammar_init_s: grammarInitS, grammar_per_token_s: grammarS / 1000 / Math.max(1, out.length) } : {}),
      },
    };
  }
}
