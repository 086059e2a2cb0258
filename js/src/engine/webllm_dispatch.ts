// Batched dispatch (dispatch.ts) on the tvmjs runtime inside web-llm's bundle.
//
// web-llm 0.2.85 carries its own copy of tvmjs and does not export it; js/build.mjs re-exports that copy from
// web-llm's module as `__tvmjsRuntime` (and fails the build when web-llm's file no longer has it). Each
// MLCEngine.reload calls `Instance.initWebGPU(device)` on a fresh tvmjs instance before it creates any kernel:
// wrapped here, so every model's WebGPU context gets batched dispatch. What each load got ("batched", or
// "upstream: why") is kept for the load's reply: a runtime this code does not know runs with tvmjs's own
// dispatch, and the reply says so. Its `asyncLoadWebGPUPipelines` is wrapped too (shaders.ts): each load compiles
// at load only the kernels a chat runs, and keeps what it compiled and deferred for the load's reply.
import * as webllm from "@mlc-ai/web-llm";
import { batchDispatch, checkContext, dispatchStats, type DispatchStats } from "./dispatch";
import { hookPipelineLoad, type ShaderStats } from "./shaders";

interface TvmjsInstance {
  lib: { webGPUContext?: unknown };
  initWebGPU(device: GPUDevice): void;
}

type Mode = "batched" | "upstream";

let wanted: Mode = "batched";
let outcome = "not loaded";
let context: unknown = null;
let shaderPlan: { windowed: boolean; extra: string[] } = { windowed: true, extra: [] };
let shaders: ShaderStats | null = null;
let shaderHook: string | null = "web-llm's bundled tvmjs is not reachable";

/** Why web-llm's tvmjs cannot be hooked, or null once it is (idempotent). */
export function hookWebLLM(): string | null {
  const rt = (webllm as unknown as { __tvmjsRuntime?: { Instance?: { prototype: TvmjsInstance } } }).__tvmjsRuntime;
  const proto = rt?.Instance?.prototype;
  if (!proto || typeof proto.initWebGPU !== "function") return "web-llm's bundled tvmjs is not reachable (js/build.mjs)";
  // a runtime whose pipeline load differs compiles every kernel at load, and the load's reply says why
  shaderHook = hookPipelineLoad(proto, () => {
    shaders = { library: 0, at_load: 0, deferred: {}, compiled_later: [], mode: "all at load" };
    return { ...shaderPlan, stats: shaders };
  });
  const marked = proto as TvmjsInstance & { __batched?: boolean };
  if (marked.__batched) return null;
  const init = proto.initWebGPU;
  if (init.length !== 1) return "tvmjs Instance.initWebGPU changed its arguments";
  proto.initWebGPU = function (this: TvmjsInstance, device: GPUDevice) {
    init.call(this, device);
    context = this.lib.webGPUContext;
    if (wanted === "upstream") {
      outcome = "upstream: turned off for this load";
      return;
    }
    const why = checkContext(context);
    if (why) {
      outcome = `upstream: the tvmjs runtime changed (${why})`;
      return;
    }
    batchDispatch(context);
    outcome = "batched";
  };
  marked.__batched = true;
  return null;
}

/**
 * Before a load: which dispatch the next WebGPU context gets; whether the model has windowed layers (else its
 * windowed kernels are compiled on first use) and any more kernels to compile on first use (tests).
 */
export function nextLoad(mode: Mode | undefined, plan: { windowed: boolean; extra?: string[] } = { windowed: true }): void {
  const why = hookWebLLM();
  wanted = mode ?? "batched";
  outcome = why ? `upstream: ${why}` : "not loaded";
  context = null;
  shaderPlan = { windowed: plan.windowed, extra: plan.extra ?? [] };
  shaders = null;
}

/**
 * After a load: what its context got, a reader of its counters (null with tvmjs's own dispatch), and what it
 * compiled at load and later (mode "all at load: why" when its kernels were not loaded through the wrapped tvmjs).
 */
export function loaded(): { dispatch: string; stats: () => DispatchStats | null; shaders: () => ShaderStats } {
  const ctx = context;
  const sh = shaders;
  return { dispatch: outcome, stats: () => dispatchStats(ctx), shaders: () => (sh
    ? { ...sh, deferred: { ...sh.deferred }, compiled_later: [...sh.compiled_later] }
    : { library: 0, at_load: 0, deferred: {}, compiled_later: [], mode: `all at load: ${shaderHook ?? "tvmjs did not load the pipelines"}` }) };
}
