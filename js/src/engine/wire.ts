// Messages between the engine host (page) and the engine worker. Internal to engine/.
import type { ChatMessage, Choice, GenerateSettings, GPUInfo, LoadProgress, Usage, ErrorCode } from "./types";
import type { DispatchStats } from "./dispatch";
import type { ShaderStats } from "./shaders";
export type { GPUInfo } from "./types";

export type ToWorker =
  | { type: "load"; id: number; key: string; model_id: string; record: Record<string, unknown> | null; device?: "webgpu" | "cpu";
      /** "upstream": keep tvmjs's own kernel dispatch for this model (comparisons); default batched (dispatch.ts). */
      dispatch?: "batched" | "upstream";
      /** More kernels (by name) to compile on first use rather than at load (tests of that path; shaders.ts). */
      defer_shaders?: string[] }
  | { type: "unload"; id: number; key: string }
  | { type: "generate"; id: number; key: string; messages: ChatMessage[]; settings: GenerateSettings;
      /** "sync": web-llm's own decode loop for this answer (comparisons); default the asynchronous one (async_decode.ts). */
      decode_loop?: "async" | "sync";
      /** "off": this answer starts from a cleared KV cache, as web-llm does (comparisons); default on (prefix_cache.ts). */
      prompt_cache?: "on" | "off" }
  | { type: "stop"; id: number }
  | { type: "reset"; id: number; key?: string }
  | { type: "gpu"; id: number };

export type FromWorker =
  | { type: "hello" }
  | { type: "progress"; id: number; progress: LoadProgress }
  | { type: "loaded"; id: number; model: string; gpu: GPUInfo; load_s: number; device: "webgpu" | "cpu"; bytes?: number; dispatch?: string;
      decode_loop?: string; prompt_cache?: string; shaders?: ShaderStats }
  | { type: "delta"; id: number; text: string }
  | { type: "done"; id: number; text: string; finish_reason: string; usage: Usage; choices?: Choice[]; dispatch_stats?: DispatchStats | null; shaders?: ShaderStats }
  | { type: "reset-done"; id: number }
  | { type: "unloaded"; id: number }
  | { type: "gpu-info"; id: number; gpu: GPUInfo }
  | { type: "error"; id: number; code: ErrorCode; message: string; detail?: Record<string, unknown> };
