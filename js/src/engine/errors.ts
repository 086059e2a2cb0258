// Maps what web-llm, tvmjs and WebGPU throw to the project's error codes and a sentence a person can act on.
import { PAGE_ERROR_CODES } from "../wire/schema.gen";
import { EngineError, type ErrorCode } from "./types";

interface Rule {
  code: ErrorCode;
  test: RegExp;
  advice: string | (() => string);
}

/** How to turn WebGPU on in the browser this runs in (the user can act on this; "no WebGPU" alone they cannot). */
export function enableWebGPUHint(ua: string = (globalThis.navigator?.userAgent ?? "")): string {
  const linux = /Linux/.test(ua) && !/Android|CrOS/.test(ua);
  if (/Firefox\//.test(ua)) {
    return "Firefox: WebGPU is on by default from Firefox 141 on Windows; elsewhere open about:config and set " +
      "dom.webgpu.enabled to true (Firefox Nightly), or use Chrome/Edge.";
  }
  if (/Safari\//.test(ua) && !/Chrom(e|ium)|Edg\//.test(ua)) {
    return "Safari: WebGPU is on from Safari 26 (macOS Tahoe / iOS 26); on older versions turn on " +
      "Develop > Feature Flags > WebGPU, or use Chrome.";
  }
  if (/Chrom(e|ium)|Edg\//.test(ua)) {
    const where = /Edg\//.test(ua) ? "edge://flags/#enable-unsafe-webgpu" : "chrome://flags/#enable-unsafe-webgpu";
    return linux
      ? `Chrome/Edge on Linux: open ${where}, enable it, and start the browser with ` +
          "--enable-unsafe-webgpu --enable-features=Vulkan (also check chrome://gpu for a blocked GPU); or load the " +
          "model on the CPU."
      : `Chrome/Edge 113+ has WebGPU on by default: update the browser, check chrome://gpu that WebGPU is not ` +
          `disabled or blocklisted, or enable ${where}.`;
  }
  return "Use a browser with WebGPU (Chrome or Edge 113+, Safari 26, Firefox 141 on Windows), served over " +
    "https or localhost (WebGPU needs a secure context).";
}

// Order matters: the first rule whose pattern matches the error's name or message wins.
const RULES: Rule[] = [
  {
    code: "no-webgpu",
    test: /WebGPUNotAvailable|WebGPUNotFound|navigator\.gpu|Cannot find adapter|requestAdapter|WebGPU is not/i,
    advice: () => `This browser offers no WebGPU adapter. ${enableWebGPUHint()}`,
  },
  {
    code: "no-shader-f16",
    test: /ShaderF16Support|shader-f16/i,
    advice: "The GPU lacks shader-f16: pick a q4f32 (f32-compute) model instead of a q4f16 one.",
  },
  {
    code: "storage-quota",
    test: /QuotaExceeded|quota exceeded|exceeds? the quota/i,
    advice: "The browser's storage for this page is full: delete cached models you no longer need " +
      "(chat.cache.delete(...) or the widget's Storage panel) or free disk space, then load the model again.",
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
    code: "bad-request",
    test: /GrammarMatcherInitError|InvalidResponseFormat|DependencyError|InvalidNumberString|RangeError: .*(logit_bias|top_logprobs)/i,
    advice: "The request's parameters are not usable (response_format schema or grammar, logit_bias, top_logprobs): fix them and ask again.",
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
    test: /Cannot fetch|Request failed|IntegrityError|CompileError|WebAssembly|fgetMetadata|Invalid kv_cache|LinkError|JSON|Unexpected token|sha256 mismatch|data's length equals nbytes|Tensor-cache record/i,
    advice: "A model file is missing or damaged (library, weights, tokenizer or config). Rebuild the model folder; the page will fetch it again.",
  },
];

// Every specific page code ("error" names nothing: the rules below may find what it was).
const KNOWN_CODES = new Set<string>(PAGE_ERROR_CODES.filter((c) => c !== "error"));

export function toEngineError(err: unknown): EngineError {
  if (err instanceof EngineError) return err;
  const e = err as { name?: string; message?: string; code?: string; detail?: Record<string, unknown> } | undefined;
  // Already named where it was detected (e.g. the blob loader's PageError): keep its code and detail.
  if (e && typeof e.code === "string" && KNOWN_CODES.has(e.code)) {
    return new EngineError(e.code as ErrorCode, e.message ?? String(err), e.detail ?? {});
  }
  const name = e?.name ?? "";
  const message = e?.message ?? String(err);
  const hay = `${name}: ${message}`;
  for (const rule of RULES) {
    if (rule.test.test(hay)) {
      const advice = typeof rule.advice === "function" ? rule.advice() : rule.advice;
      return new EngineError(rule.code, `${advice} (${hay.slice(0, 400)})`, detailOf(rule.code, hay));
    }
  }
  return new EngineError("error", hay.slice(0, 600));
}

/** Numbers a program can use, read off the message (web-llm puts them only there). */
function detailOf(code: ErrorCode, hay: string): Record<string, unknown> {
  if (code === "context-overflow") {
    const n = /prompt tokens:\s*(\d+)/i.exec(hay);
    const w = /context window size:\s*(\d+)/i.exec(hay);
    if (n && w) return { prompt_tokens: Number(n[1]), context_window_size: Number(w[1]) };
  }
  return {};
}

/** Plain object form for postMessage / model.send. */
export function errorPayload(err: unknown): { code: ErrorCode; message: string; detail?: Record<string, unknown> } {
  const e = toEngineError(err);
  return { code: e.code, message: e.message, ...(e.detail && Object.keys(e.detail).length ? { detail: e.detail } : {}) };
}
