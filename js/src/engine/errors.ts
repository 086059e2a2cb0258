// Maps what web-llm, tvmjs and WebGPU throw to the project's error codes and a sentence a person can act on.
import { EngineError, type ErrorCode } from "./types";

interface Rule {
  code: ErrorCode;
  test: RegExp;
  advice: string;
}

// Order matters: the first rule whose pattern matches the error's name or message wins.
const RULES: Rule[] = [
  {
    code: "no-webgpu",
    test: /WebGPUNotAvailable|WebGPUNotFound|navigator\.gpu|Cannot find adapter|requestAdapter|WebGPU is not/i,
    advice: "This browser offers no WebGPU adapter. Use a recent Chrome or Edge (or enable WebGPU), or pick the CPU device.",
  },
  {
    code: "no-shader-f16",
    test: /ShaderF16Support|shader-f16/i,
    advice: "The GPU lacks shader-f16: pick a q4f32 (f32-compute) model instead of a q4f16 one.",
  },
  {
    code: "device-lost",
    test: /DeviceLost|device was lost|Device is lost|GPUDevice.*lost/i,
    advice: "The GPU device was lost (often out of memory or a driver reset). Reload the page and try a smaller model.",
  },
  {
    code: "out-of-memory",
    test: /out of memory|OutOfMemory|Failed to allocate|Array buffer allocation failed|RangeError: .*allocat/i,
    advice: "Not enough GPU or page memory for this model. Close other tabs or pick a smaller model.",
  },
  {
    code: "context-overflow",
    test: /ContextWindowSizeExceeded|exceed context window|context window size/i,
    advice: "The conversation no longer fits the model's context window: reset the chat or shorten the prompt.",
  },
  {
    code: "aborted",
    test: /AbortError|aborted/i,
    advice: "The operation was stopped.",
  },
  {
    code: "bad-model",
    test: /ModelNotFound|SpecifiedModelNotFound|UnsupportedModelId|MissingModelWasm|UnsupportedTokenizerFiles|ModelNotLoaded/i,
    advice: "The model id or record is not usable: check its name, or rebuild the model folder.",
  },
  {
    code: "bad-artifact",
    test: /Cannot fetch|Request failed|IntegrityError|CompileError|WebAssembly|fgetMetadata|Invalid kv_cache|LinkError|JSON|Unexpected token|sha256 mismatch/i,
    advice: "A model file is missing or damaged (library, weights, tokenizer or config). Rebuild the model folder; the page will fetch it again.",
  },
];

export function toEngineError(err: unknown): EngineError {
  if (err instanceof EngineError) return err;
  const e = err as { name?: string; message?: string; code?: string } | undefined;
  const name = e?.name ?? "";
  const message = e?.message ?? String(err);
  const hay = `${name}: ${message}`;
  for (const rule of RULES) {
    if (rule.test.test(hay)) return new EngineError(rule.code, `${rule.advice} (${hay.slice(0, 400)})`);
  }
  return new EngineError("error", hay.slice(0, 600));
}

/** Plain object form for postMessage / model.send. */
export function errorPayload(err: unknown): { code: ErrorCode; message: string } {
  const e = toEngineError(err);
  return { code: e.code, message: e.message };
}
