// Prompt caching for web-llm's pipeline: a request whose prompt starts with tokens already in the KV cache prefills
// only the rest.
//
// web-llm 0.2.85 keeps the KV cache only when a request continues the conversation it last answered (the same
// messages plus new ones); any other request clears the cache and prefills its whole prompt. Requests that share a
// system prompt, a few-shot preamble or a schema's instructions but differ after it (a batch of questions, n > 1
// choices, an answer asked again) pay for the shared part every time: on a software adapter about 0.2 s a token.
// Here clearing is put off until the next prompt is known. `resetKVCache` keeps the cache and remembers which
// tokens are in it (the last prompt and the ids the model emitted, up to `filledKVCacheLength`); the next
// `getInputData` (web-llm's prompt tokenization) compares its tokens with them, pops the positions after the
// longest common prefix off the cache (`vm.builtin.kv_state_popn`; at least the prompt's last token always runs,
// to give the logits) and returns only the tokens after it. When nothing is shared, or what the cache holds is not
// known for certain, the cache is cleared as web-llm would. The keys and values of a prefix depend only on its
// tokens and positions, so the answer is the same as with a cold cache; the tokens reused are reported with the
// answer (`cachedTokens`, the page's usage `cached_tokens`; OpenAI's `prompt_tokens_details.cached_tokens`), and
// web-llm counts the prefilled ones as `prompt_tokens`, as it does for a continued conversation.
//
// Written against web-llm's LLMChatPipeline (pinned version); `installPrefixCache` names what a pipeline lacks and
// then leaves it alone. Models with an RNN state or a sliding window keep web-llm's behaviour.

interface Tvm {
  beginScope(): void;
  endScope(): void;
  scalar(value: number, dtype: string): unknown;
  getGlobalFunc(name: string): (...args: unknown[]) => unknown;
}

type InputData = [unknown[], number, unknown];

/** The parts of web-llm's LLMChatPipeline this uses. */
interface Pipeline {
  tvm: Tvm;
  kvCache: unknown;
  rnnState?: unknown;
  slidingWindowSize: number;
  filledKVCacheLength: number;
  outputIds: number[];
  resetKVCache(): void;
  getInputData(): Promise<InputData>;
  prefillStep(...args: unknown[]): Promise<void>;
  embedAndForward(...args: unknown[]): Promise<unknown>;
}

const STATE = Symbol.for("webllmWidget.prefixCache");

/** Installs prompt caching on a loaded model's pipeline; returns "on", or "off: why". */
export function installPrefixCache(p: unknown): string {
  if (!p || typeof p !== "object") return "off: no pipeline";
  const o = p as Record<string, unknown>;
  for (const m of ["resetKVCache", "getInputData", "prefillStep", "embedAndForward"]) {
    if (typeof o[m] !== "function") return `off: LLMChatPipeline.${m} is missing`;
  }
  for (const f of ["kvCache", "filledKVCacheLength", "outputIds", "slidingWindowSize"]) {
    if (!(f in o)) return `off: LLMChatPipeline.${f} is missing`;
  }
  if (o.rnnState !== undefined) return "off: the model keeps an RNN state";
  if (o.slidingWindowSize !== -1) return "off: the model attends through a sliding window";
  const tvm = o.tvm as Tvm | undefined;
  if (!tvm || typeof tvm.scalar !== "function") return "off: the pipeline's tvmjs instance is not the one expected";
  tvm.beginScope();
  try {
    tvm.getGlobalFunc("vm.builtin.kv_state_popn");
  } catch (e) {
    return `off: the runtime has no vm.builtin.kv_state_popn (${e})`;
  } finally {
    tvm.endScope();
  }
  const pipe = p as Pipeline & Record<symbol, PrefixCache>;
  if (!pipe[STATE]) pipe[STATE] = new PrefixCache(pipe);
  return "on";
}

/** Whether the next answers of `p` may reuse the cache (default); off, each starts from a cleared one, as in web-llm
 * (the benchmark compares both). */
export function setPromptCache(p: unknown, on: boolean): void {
  const s = (p as Record<symbol, PrefixCache> | null)?.[STATE];
  if (s) s.enabled = on;
}

/** Empties the KV cache of `p` now (a reset the user asked for: nothing of the conversation stays). */
export function forgetPrefix(p: unknown): void {
  (p as Record<symbol, PrefixCache> | null)?.[STATE]?.forget();
}

/** How many prompt tokens the last prefill of `p` found in the KV cache (0 with a cold cache); null when prompt
 * caching is not installed. */
export function cachedTokens(p: unknown): number | null {
  const s = (p as Record<symbol, PrefixCache> | null)?.[STATE];
  return s ? s.cached : null;
}

function commonPrefix(a: number[], b: number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/** The prompt's token ids, or null when it holds anything but tokens (an image). */
function tokensOf(data: unknown[]): number[] | null {
  const out: number[] = [];
  for (const part of data) {
    if (!Array.isArray(part)) return null;
    for (const t of part) {
      if (typeof t !== "number") return null;
      out.push(t);
    }
  }
  return out;
}

class PrefixCache {
  cached = 0;
  enabled = true;
  /** The tokens in the cache when the last prefill ended (its prompt included); null when not known. */
  private base: number[] | null = [];
  /** After a put-off reset: the tokens the cache still holds (null: no reset is pending). */
  private held: number[] | null = null;
  /** At the start of a prefill that continues the conversation: the tokens in the cache. */
  private atPrefill: number[] | null = null;
  private readonly orig: { resetKVCache: () => void; getInputData: () => Promise<InputData>; prefillStep: Pipeline["prefillStep"];
    embedAndForward: Pipeline["embedAndForward"] };

  constructor(private readonly p: Pipeline) {
    const self = this;
    this.orig = { resetKVCache: p.resetKVCache, getInputData: p.getInputData, prefillStep: p.prefillStep,
      embedAndForward: p.embedAndForward };
    p.resetKVCache = function () {
      const kv = self.enabled ? self.inCache() : null;
      if (kv && kv.length > 0) {
        self.held = kv; // cleared, or partly kept, when the next prompt is known
        return;
      }
      self.clear();
    };
    p.prefillStep = function (...args: unknown[]) {
      self.atPrefill = self.held ? null : self.inCache();
      return self.orig.prefillStep.apply(p, args);
    };
    p.getInputData = async function () {
      return self.inputData();
    };
    p.embedAndForward = function (...args: unknown[]) {
      if (self.held) self.clear(); // a forward that did not come through getInputData (web-llm's evaluate()) starts cold
      return self.orig.embedAndForward.apply(p, args);
    };
  }

  /** The tokens whose keys and values are in the cache now, or null when not known for certain. */
  private inCache(): number[] | null {
    const p = this.p;
    if (!this.base) return null;
    const all = this.base.concat(p.outputIds);
    return p.filledKVCacheLength <= all.length ? all.slice(0, p.filledKVCacheLength) : null;
  }

  forget(): void {
    this.clear();
    this.p.filledKVCacheLength = 0;
  }

  private clear(): void {
    this.held = null;
    this.base = [];
    this.orig.resetKVCache.call(this.p);
  }

  private async inputData(): Promise<InputData> {
    const p = this.p;
    const held = this.held;
    if (held && p.filledKVCacheLength !== 0) { // not web-llm's order of calls (it zeroes the length): clear, as it would
      this.clear();
      p.filledKVCacheLength = 0;
    }
    const r = await this.orig.getInputData.call(p);
    const tokens = tokensOf(r[0]);
    if (held && this.held) {
      this.held = null;
      let keep = tokens ? commonPrefix(held, tokens) : 0;
      if (tokens && keep === tokens.length) keep -= 1; // the last prompt token runs: its logits give the first id
      if (!tokens || keep <= 0) {
        this.clear();
        this.base = tokens;
        this.cached = 0;
        return r;
      }
      if (held.length > keep) {
        const tvm = p.tvm;
        tvm.beginScope();
        try {
          tvm.getGlobalFunc("vm.builtin.kv_state_popn")(p.kvCache, tvm.scalar(0, "int64"), tvm.scalar(held.length - keep, "int32"));
        } finally {
          tvm.endScope();
        }
      }
      p.filledKVCacheLength = keep;
      this.base = tokens;
      this.cached = keep;
      return [[tokens.slice(keep)], tokens.length - keep, r[2]];
    }
    // a cold cache, or web-llm continuing the conversation it holds (its earlier turns stay in the cache)
    const before = p.filledKVCacheLength;
    this.cached = before;
    this.base = before === 0 ? tokens : this.atPrefill && tokens ? this.atPrefill.concat(tokens) : null;
    return r;
  }
}
