// Token log-probabilities for `logprobs`/`top_logprobs`, the same on both engines: the log-softmax of the
// model's logits at each step (before logit_bias, penalties, temperature and top-p, so a greedy answer still
// shows how sure the model was), for the token that was drawn and the `k` most likely ones. WebGPU feeds it
// through web-llm's logit-processor hook (worker.ts), the CPU engine from its own logits (cpu/engine.ts).
// web-llm's own logprobs are taken after temperature (one-hot at temperature 0) and only with top_logprobs > 0.

/** One alternative at a step, in OpenAI's shape. */
export interface TopLogprob {
  token: string;
  bytes: number[];
  logprob: number;
}

/** One generated token, in OpenAI's shape, plus its id in the model's vocabulary. */
export interface TokenLogprob extends TopLogprob {
  top_logprobs: TopLogprob[];
  token_id: number;
}

/** Most alternatives a step reports (OpenAI allows 20). */
export const MAX_TOP_LOGPROBS = 20;

const encoder = new TextEncoder();

export class LogprobRecorder {
  readonly records: TokenLogprob[] = [];
  private lse = 0;
  private logits: Float32Array | null = null;
  private top: number[] = [];

  constructor(private k: number, private decode: (id: number) => string) {}

  /** The logits of the step about to be sampled (not modified; kept until `take`). */
  observe(logits: Float32Array): void {
    let max = -Infinity;
    for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
    let sum = 0;
    for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
    this.lse = max + Math.log(sum);
    this.logits = logits.slice();
    // The k largest, by a running insertion into a short sorted list (k <= 20: one pass over the vocabulary).
    const top: number[] = [];
    if (this.k > 0) {
      for (let i = 0; i < logits.length; i++) {
        const v = logits[i];
        if (top.length === this.k && v <= logits[top[top.length - 1]]) continue;
        let j = top.length === this.k ? top.length - 1 : top.length;
        while (j > 0 && logits[top[j - 1]] < v) j--;
        top.splice(j, 0, i);
        if (top.length > this.k) top.pop();
      }
    }
    this.top = top;
  }

  private entry(id: number): TopLogprob {
    const token = this.decode(id);
    return { token, bytes: Array.from(encoder.encode(token)), logprob: this.logits![id] - this.lse };
  }

  /** The token drawn at the step last observed. */
  take(id: number): void {
    if (!this.logits) return;
    this.records.push({ ...this.entry(id), token_id: id, top_logprobs: this.top.map((t) => this.entry(t)) });
    this.logits = null;
  }
}
