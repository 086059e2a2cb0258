// Page side of the kernel benchmark: the teaching widget's model profiler (js/src/teach) on a model folder served
// at `base`, reshaped for bench/kernels.py.
import { gpuDevice } from "../../js/src/tvm";
import { profileModel } from "../../js/src/teach/profile_model";

export async function run(opts: { base: string; promptLen: number; steps: number }) {
  const state = await gpuDevice();
  const wasm = await (await fetch(`${opts.base}model.wasm`)).arrayBuffer();
  const config = await (await fetch(`${opts.base}mlc-chat-config.json`)).json();
  const p = await profileModel({ wasm, base: new URL(opts.base, location.href).href, cacheScope: "webllm-widget-bench",
    config, promptLen: opts.promptLen, steps: opts.steps, device: state.device, timestamps: state.timestamps });
  return { errors: p.errors, timestamps: p.timestamps, peaks: p.peaks, wall_ms: p.decode.map((d) => d.wall_ms),
    passes: p.timestamps ? p.decode.map((d) => d.passes.map((x) => ({ name: x.name, ns: x.ns ?? 0 }))) : [],
    meta: p.meta, config: config.model_config, vocab: config.vocab_size };
}

(globalThis as any).benchKernels = { run };
