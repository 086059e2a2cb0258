// The engine interface: what a host (the Chat widget, the headless runner) may ask of the engine.
// Nothing here knows about anywidget or the page it runs in. The records that also travel between kernel and
// page (model spec, settings, progress, usage, ...) are generated from the Python wire schema.
import type {
  BlobRef, ChatLoadResult, ShaderStats, ChatMessage, GenerateSettings as WireSettings, GPUInfo, LoadProgress, ModelSpec,
  PageErrorCode, Usage,
} from "../wire/schema.gen";
import type { TokenLogprob } from "./logprobs";

export type { ChatMessage, GPUInfo, LoadProgress, ModelSpec, Usage };

/** One file of a model folder, identified by content. */
export type ModelFile = BlobRef;

/** Sampling settings (the wire's), with `response_format` typed by its shapes. */
export type GenerateSettings = Omit<WireSettings, "response_format"> & { response_format?: ResponseFormat };

export type ResponseFormat =
  | { type: "text" }
  | { type: "json_object"; schema?: string }
  | { type: "json_schema"; json_schema: { name?: string; schema?: unknown; strict?: boolean | null } }
  | { type: "grammar"; grammar: string }
  | ToolCallsFormat;

/** The grammar of tool calls (the kernel's widgets/tool_calls.py writes it; tool_grammar.ts compiles it). */
export interface ToolCallsFormat {
  type: "tool_calls";
  /** "required": calls only; "auto": text, and any call the model opens held to the grammar. */
  mode: "required" | "auto";
  /** One per function: the call's text up to the arguments, the parameters' JSON schema, the text after them. */
  tags: { begin: string; schema: unknown; end: string }[];
  /** Between two calls. */
  separator: string;
  /** The text that opens every call (a prefix of each `begin`). */
  trigger: string;
  /** Several calls allowed (else one). */
  parallel: boolean;
  /** mode "auto" with a response_format: the answer is one call or text in this format (json_object, json_schema,
   * grammar), not free text. */
  content?: Exclude<ResponseFormat, ToolCallsFormat | { type: "text" }>;
}

/** One answer among the `n` of a request. */
export interface Choice {
  index: number;
  text: string;
  finish_reason: string;
  /** Present when `logprobs` was asked for. */
  logprobs?: { content: TokenLogprob[] } | null;
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
  /** Batched dispatch's counters for this model so far (engine/dispatch.ts; WebGPU only, absent without it). */
  dispatch_stats?: { launches: number; passes: number; bind_groups_created: number; bind_groups_reused: number; uniform_uploads: number };
  /** The model's kernels compiled at load and, since, on first use (engine/shaders.ts; WebGPU only). */
  shaders?: ShaderStats;
}

/** What a load reports: the wire's load result (ChatLoadResult), where the engine may leave the device and the
 * schedule unset (the host fills them in before it replies). */
export type LoadResult = Omit<ChatLoadResult, "device" | "device_reason" | "schedule"> &
  Partial<Pick<ChatLoadResult, "device" | "device_reason">> & { schedule?: string };

/** The error codes the page may send (generated from Python's webllm_widget.errors). */
export type ErrorCode = PageErrorCode;

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
