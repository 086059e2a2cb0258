// Batched dispatch (dispatch.ts) on the tvmjs runtime inside web-llm's bundle.
//
// web-llm 0.2.85 carries its own copy of tvmjs and does not export it; js/build.mjs re-exports that copy from
// web-llm's module as `__tvmjsRuntime` (and fails the build when web-llm's file no longer has it). Each
// MLCEngine.reload calls `Instance.initWebGPU(device)` on a fresh tvmjs instance before it creates any kernel:
// wrapped here, so every model's WebGPU context gets batched dispatch. What each load got ("batched", or
// "upstream: why") is kept for the load's reply: a runtime this code does not know runs with tvmjs's own
// dispatch, and the reply says so.
import * as webllm from "@mlc-ai/web-llm";
import { batchDispatch, checkContext, dispatchStats, type DispatchStats } from "./dispatch";

interface TvmjsInstance {
  lib: { webGPUContext?: unknown };
  initWebGPU(device: GPUDevice): void;
}

type Mode = "batched" | "upstream";

let wanted: Mode = "batched";
let outcome = "not loaded";
let context: unknown = null;

/** Why web-llm's tvmjs cannot be hooked, or null once it is (idempotent). */
export function hookWebLLM(): string | null {
  const rt = (webllm as unknown as { __tvmjsRuntime?: { Instance?: { prototype: TvmjsInstance } } }).__tvmjsRuntime;
  const proto = rt?.Instance?.prototype;
  if (!proto || typeof proto.initWebGPU !== "function") return "web-llm's bundled tvmjs is not reachable (js/build.mjs)";
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

/** Before a load: which dispatch the next WebGPU context gets. */
export function nextLoad(mode: Mode | undefined): void {
  const why = hookWebLLM();
  wanted = mode ?? "batched";
  outcome = why ? `upstream: ${why}` : "not loaded";
  context = null;
}

/** After a load: what its context got, and a reader of its counters (null with tvmjs's own dispatch). */
export function loaded(): { dispatch: string; stats: () => DispatchStats | null } {
  const ctx = context;
  return { dispatch: outcome, stats: () => dispatchStats(ctx) };
}
