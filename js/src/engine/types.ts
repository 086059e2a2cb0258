// The engine interface: what a host (the Chat widget, the headless runner) may ask of the engine.
// Nothing here knows about anywidget or the page it runs in.

import type { TokenLogprob } from "./logprobs";

/** A chat message in OpenAI's shape. */
export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/** One file of a model folder, identified by content. */
export interface ModelFile {
  name: string;
  sha256: string;
  size: number;
}

/**
 * What to load. Either a local folder whose files reach the page as content-addressed blobs
 * (`files` + `lib`), or an MLC prebuilt id that the page fetches itself (`prebuilt: true`),
 * or a record pointing at a URL (`url` + `lib_url`).
 */
export interface ModelSpec {
  /** Stable id the UI shows and requests name. */
  id: string;
  /** Local folder: every file with its hash. `key` (hash of the manifest) names the folder. */
  files?: ModelFile[];
  key?: string;
  /** Name of the model library (.wasm) among `files`. */
  lib?: string;
  /** An MLC prebuilt model id (online: fetched from Hugging Face by the page). */
  prebuilt?: boolean;
  /** A model served over HTTP(S) in the Hugging Face layout, with its library URL. */
  url?: string;
  lib_url?: string;
  /** Overrides for mlc-chat-config.json (e.g. context_window_size). */
  overrides?: Record<string, unknown>;
  required_features?: string[];
  /** For an f16-compute model: its f32-compute twin (prebuilt id, or quantization to rebuild a folder with). */
  f32_variant?: string | null;
  /** Where to run: "webgpu", "cpu" (a model built for the page's CPU), or "auto" (default "webgpu"). */
  device?: "auto" | "webgpu" | "cpu";
  /** The same model built for the CPU, used when `device` is "auto" and the page has no hardware adapter. */
  cpu?: ModelSpec;
  /** false when only the CPU build exists (then "auto" runs it on the CPU whatever the adapter). */
  webgpu?: boolean;
  /** The GPU kernel schedule of this spec's library ("auto", "gpu" or "fallback"), when known. */
  schedule?: string;
  /** The same model (same weights) with the library built for software adapters (schedule "fallback"):
   * used on WebGPU when the adapter is a software fallback (SwiftShader). */
  webgpu_fallback?: ModelSpec;
}

/** Sampling settings; unset fields keep the model's defaults. */
export interface GenerateSettings {
  temperature?: number;
  top_p?: number;
  max_tokens?: number;
  seed?: number;
  stop?: string[];
  frequency_penalty?: number;
  presence_penalty?: number;
  repetition_penalty?: number;
  /** Keep generating past the end-of-sequence token until max_tokens (benchmarks: fixed output length). */
  ignore_eos?: boolean;
  /** Answers to generate for the same messages (choice i samples with seed + i when a seed is given). */
  n?: number;
  /** Return each token's log-probability (logprobs.ts), with the `top_logprobs` most likely alternatives. */
  logprobs?: boolean;
  top_logprobs?: number;
  /** Added to the logits of the given token ids before sampling (-100 bans a token, 100 forces it). */
  logit_bias?: Record<string, number>;
  /** OpenAI's response_format: {type: "text" | "json_object"}, {type: "json_schema", json_schema: {schema}},
   * or {type: "grammar", grammar: EBNF} (web-llm's extension). WebGPU only: xgrammar inside web-llm. */
  response_format?: ResponseFormat;
}

export type ResponseFormat =
  | { type: "text" }
  | { type: "json_object"; schema?: string }
  | { type: "json_schema"; json_schema: { name?: string; schema?: unknown; strict?: boolean | null } }
  | { type: "grammar"; grammar: string };

/** One answer among the `n` of a request. */
export interface Choice {
  index: number;
  text: string;
  finish_reason: string;
  /** Present when `logprobs` was asked for. */
  logprobs?: { content: TokenLogprob[] } | null;
}

export interface LoadProgress {
  /** 0..1 */
  progress: number;
  phase: "install" | "fetch" | "load" | "compile" | "done";
  bytes_done?: number;
  bytes_total?: number;
  elapsed_s: number;
  /** Estimated seconds left, when known. */
  eta_s?: number;
  text: string;
}

export interface GPUInfo {
  vendor: string;
  architecture: string;
  description: string;
  is_fallback: boolean;
  features: string[];
  max_buffer_size?: number;
  max_storage_buffer_binding_size?: number;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prefill_tokens_per_s?: number;
  decode_tokens_per_s?: number;
  time_to_first_token_s?: number;
  e2e_latency_s?: number;
}

export interface GenerateResult {
  /** The first choice's text (the one streamed). */
  text: string;
  /** Every choice (one unless `n` > 1). */
  choices?: Choice[];
  finish_reason: "stop" | "length" | "abort" | string;
  usage: Usage;
  /** The model that answered. */
  model?: string;
  /** Set when the model had been unloaded to make room for another and was loaded again for this request. */
  reloaded?: { load_s: number };
}

export interface LoadResult {
  model: string;
  gpu: GPUInfo;
  load_s: number;
  /** Bytes the host had to bring into the page's cache for this load (0 when all were cached). */
  bytes_installed: number;
  /** Which engine runs the model, and why it was chosen. */
  device?: "webgpu" | "cpu";
  device_reason?: string;
  /** The GPU kernel schedule of the library that runs it (WebGPU only; "fallback" on software adapters). */
  schedule?: string;
}

/** Error codes shared with Python (webllm_widget.errors). */
export type ErrorCode =
  | "no-webgpu"
  | "no-shader-f16"
  | "out-of-memory"
  | "device-lost"
  | "bad-artifact"
  | "bad-model"
  | "context-overflow"
  | "aborted"
  | "unreachable"
  | "unsupported"
  | "bad-request"
  | "error";

export class EngineError extends Error {
  code: ErrorCode;
  /** Numbers a program can test (e.g. prompt_tokens and context_window_size for context-overflow). */
  detail: Record<string, unknown>;
  constructor(code: ErrorCode, message: string, detail: Record<string, unknown> = {}) {
    super(message);
    this.code = code;
    this.detail = detail;
    this.name = "EngineError";
  }
}

/** Supplies the bytes of a content-addressed file (the host's transport: comm, HTTP, ...). */
/**
 * Bytes the source has already checked against the file's sha256 (the blob loader does, as they arrive):
 * installed without hashing them again (~0.2 s per 128 MB).
 */
export interface VerifiedBytes {
  verified: Uint8Array;
}

export type BlobSource = (
  file: ModelFile,
  onBytes?: (received: number) => void,
) => Promise<Response | Blob | ArrayBuffer | Uint8Array | VerifiedBytes>;

export interface Engine {
  load(spec: ModelSpec, onProgress?: (p: LoadProgress) => void, source?: BlobSource): Promise<LoadResult>;
  generate(
    messages: ChatMessage[],
    settings: GenerateSettings,
    onDelta?: (delta: string) => void,
    signal?: AbortSignal,
  ): Promise<GenerateResult>;
  /** Ends the running generation; its promise resolves with finish_reason "abort". */
  stop(): void;
  /** Forgets the KV cache of the last conversation. */
  reset(): Promise<void>;
  readonly loaded: string | null;
  readonly gpu: GPUInfo | null;
}
