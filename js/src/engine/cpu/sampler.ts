// Picks the next token from logits on the CPU: penalties, temperature, top-p (nucleus), seeded randomness.
// Temperature 0 (or below 1e-5) is greedy. Same settings as web-llm's, computed in plain JS: the logits
// are already in CPU memory on this path, and one pass over the vocabulary costs well under a millisecond.

/** mulberry32: small, fast, good enough for sampling; the same seed gives the same answer. */
export function makeRng(seed?: number): () => number {
  let a = (seed ?? Math.floor(Math.random() * 2 ** 32)) >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface SampleSettings {
  temperature: number;
  top_p: number;
  presence_penalty?: number;
  frequency_penalty?: number;
  repetition_penalty?: number;
}

/** Apply presence/frequency (OpenAI) and repetition (CTRL) penalties for the tokens generated so far, in place. */
export function applyPenalties(logits: Float32Array, counts: Map<number, number>, s: SampleSettings): void {
  const pres = s.presence_penalty ?? 0;
  const freq = s.frequency_penalty ?? 0;
  const rep = s.repetition_penalty ?? 1;
  if (pres === 0 && freq === 0 && rep === 1) return;
  for (const [id, n] of counts) {
    let x = logits[id] - pres - freq * n;
    if (rep !== 1) x = x < 0 ? x * rep : x / rep;
    logits[id] = x;
  }
}

export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/** The next token id. `allowed` bounds the ids considered (the tokenizer's vocabulary; padding rows excluded). */
export function sample(logits: Float32Array, s: SampleSettings, rng: () => number, allowed = logits.length): number {
  const view = allowed < logits.length ? logits.subarray(0, allowed) : logits;
  if (!(s.temperature > 1e-5)) return argmax(view);
  let max = -Infinity;
  for (let i = 0; i < view.length; i++) if (view[i] > max) max = view[i];
  const probs = new Float32Array(view.length);
  let sum = 0;
  for (let i = 0; i < view.length; i++) {
    const p = Math.exp((view[i] - max) / s.temperature);
    probs[i] = p;
    sum += p;
  }
  const topP = s.top_p > 0 && s.top_p < 1 ? s.top_p : 1;
  let ids: number[];
  if (topP < 1) {
    // Candidates above a small cut-off, sorted: the nucleus almost always lies in a few hundred tokens.
    const floor = (sum * 1e-6) / view.length;
    ids = [];
    for (let i = 0; i < view.length; i++) if (probs[i] > floor) ids.push(i);
    ids.sort((a, b) => probs[b] - probs[a] || a - b);
    let acc = 0;
    let k = 0;
    while (k < ids.length && (k === 0 || acc < topP * sum)) acc += probs[ids[k++]];
    ids = ids.slice(0, k);
    sum = acc;
  } else {
    ids = [];
    for (let i = 0; i < view.length; i++) ids.push(i);
  }
  let u = rng() * sum;
  for (const id of ids) {
    u -= probs[id];
    if (u <= 0) return id;
  }
  return ids[ids.length - 1];
}
