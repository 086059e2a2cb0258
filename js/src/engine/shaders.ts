// Which WebGPU kernels of a model library are compiled while the model loads, and which on first use.
//
// tvmjs's `asyncLoadWebGPUPipelines` creates a compute pipeline for every kernel of the library before the model
// answers. On a software adapter (SwiftShader) that is most of a load, and a chat library carries kernels its chat
// never runs: the paged KV cache is built with tree attention (speculative decoding), MLA, a debug read of the
// cache and the compaction that follows a tree commit, and with windowed attention even when no layer is windowed.
// Those kernels are left out of the load here. A kernel left out still works: the first call of a host function
// that launches it looks it up in the library's WebGPU module, which compiles a kernel it has no pipeline for on
// the spot (tvmjs's `createShader`, a synchronous pipeline), before the launch. So which kernels are left out
// changes how long a load takes, never what the model computes.
//
// The rule (`deferReason`): a kernel is left out when its name belongs to a KV-cache family the engine's chat path
// never calls (`UNUSED_FAMILIES`), or to the windowed family when the model's config has no sliding window.
// Written against tvmjs's `asyncLoadWebGPUPipelines(mod)`, which reads the kernel list from
// `mod.getFunction("webgpu.get_fmap")`: the module is handed on with that list filtered, and upstream's code does
// the rest (its progress reports count the kernels it compiles).

// What a load compiled and what it left for first use: the wire schema's record (sent to the kernel as-is).
import type { ShaderStats } from "../wire/schema.gen";
export type { ShaderStats };

/** KV-cache kernel families a chat never launches (TVM 0.27's paged KV cache, nn.llm.kv_cache). */
export const UNUSED_FAMILIES: readonly [RegExp, string][] = [
  [/^(batch_)?tree_attn/, "tree attention (speculative decoding)"],
  [/(^|_)mla(_|$)/, "multi-head latent attention (MLA)"],
  [/debug_get_kv/, "KV-cache debug read"],
  [/^compact_kv_copy/, "KV compaction after a tree commit"],
];
const WINDOWED = /sliding_window/;

/** Why kernel `name` is compiled on first use rather than at load, or null when it is compiled at load. */
export function deferReason(name: string, windowed: boolean, extra: readonly string[] = []): string | null {
  for (const [re, why] of UNUSED_FAMILIES) if (re.test(name)) return why;
  if (!windowed && WINDOWED.test(name)) return "windowed attention (the model has no sliding window)";
  if (extra.includes(name) || extra.includes(name.replace(/_kernel$/, ""))) return "asked for (__webllmWidgetDeferShaders)";
  return null;
}

/** Whether a mlc-chat-config (with the record's overrides on top) gives any layer a sliding window. */
export function hasSlidingWindow(cfg: Record<string, any> | null): boolean {
  if (!cfg) return true; // unknown: the windowed kernels are compiled at load
  const mc = (cfg.model_config ?? {}) as Record<string, unknown>;
  return [cfg.sliding_window_size, mc.sliding_window_size, mc.sliding_window].some((x) => Number(x) > 0);
}

interface TvmjsModule {
  getFunction(name: string, queryImports?: boolean): (...args: unknown[]) => unknown;
}

interface ProgressReport { progress: number; timeElapsed: number; text: string }

interface TvmjsInstanceWithPipelines {
  lib: { webGPUContext?: unknown };
  initProgressCallback: ((r: ProgressReport) => void)[];
  asyncLoadWebGPUPipelines(mod: TvmjsModule): Promise<void>;
}

/** Why `proto` (tvmjs's Instance.prototype) cannot have its pipeline load filtered, or null. */
export function checkInstance(proto: unknown): string | null {
  const p = proto as Partial<TvmjsInstanceWithPipelines> | null;
  if (!p || typeof p.asyncLoadWebGPUPipelines !== "function") return "tvmjs Instance.asyncLoadWebGPUPipelines is missing";
  if (p.asyncLoadWebGPUPipelines.length !== 1) return "tvmjs Instance.asyncLoadWebGPUPipelines changed its arguments";
  return null;
}

/**
 * Wraps tvmjs's `Instance.prototype.asyncLoadWebGPUPipelines` so that each load compiles only the kernels
 * `plan()` does not defer; `plan()` is asked at each load and gets the load's stats to fill in (null: compile
 * all, as upstream does). Returns why it could not, or null (idempotent).
 */
export function hookPipelineLoad(proto: unknown, plan: () => { windowed: boolean; extra: string[]; stats: ShaderStats } | null): string | null {
  const why = checkInstance(proto);
  if (why) return why;
  const p = proto as TvmjsInstanceWithPipelines & { __deferShaders?: boolean };
  if (p.__deferShaders) return null;
  const load = p.asyncLoadWebGPUPipelines;
  p.asyncLoadWebGPUPipelines = async function (this: TvmjsInstanceWithPipelines, mod: TvmjsModule) {
    const want = plan();
    if (!want) return load.call(this, mod);
    const { stats } = want;
    const ctx = this.lib.webGPUContext as { createShader?: (finfo: { name: string }, code: string) => unknown } | undefined;
    if (!ctx || typeof ctx.createShader !== "function" || ctx.createShader.length !== 2) {
      stats.mode = "all at load: tvmjs WebGPUContext.createShader is not the one this layer knows";
      return load.call(this, mod);
    }
    // the library's WebGPU module compiles a kernel it has no pipeline for through createShader, on first use
    const create = ctx.createShader;
    ctx.createShader = function (this: unknown, finfo: { name: string }, code: string) {
      if (finfo && finfo.name in stats.deferred) stats.compiled_later.push(finfo.name);
      return create.call(this, finfo, code);
    };
    const view: TvmjsModule = {
      getFunction(name: string, queryImports?: boolean) {
        const f = mod.getFunction(name, queryImports);
        if (name !== "webgpu.get_fmap") return f;
        return () => {
          const all = JSON.parse(String(f())) as Record<string, unknown>;
          const kept: Record<string, unknown> = {};
          for (const [k, v] of Object.entries(all)) {
            const reason = deferReason(k, want.windowed, want.extra);
            if (reason) stats.deferred[k] = reason;
            else kept[k] = v;
          }
          stats.library = Object.keys(all).length;
          stats.at_load = Object.keys(kept).length;
          return JSON.stringify(kept);
        };
      },
    };
    // upstream's progress text counts the kernels it compiles: say what is left for first use
    const callbacks = this.initProgressCallback;
    this.initProgressCallback = callbacks.map((cb) => (r: ProgressReport) => cb(/^Loading GPU shader modules/.test(r.text)
      ? { ...r, text: `${r.text} ${Object.keys(stats.deferred).length} of ${stats.library} compiled on first use instead (kernels a chat does not run).` }
      : r));
    try {
      await load.call(this, view);
      stats.mode = "deferred";
    } finally {
      this.initProgressCallback = callbacks;
    }
  };
  p.__deferShaders = true;
  return null;
}
