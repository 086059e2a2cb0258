// anywidget entry of webllm_widget.WebGPU: reports the adapter, loads TVM libraries shipped as blobs,
// runs their functions on WebGPU for the kernel, and shows what happened.
import type { AnyModel } from "@anywidget/types";
import { PageChannel, PageError, Envelope, describeError } from "./protocol";
import { BlobLoader } from "./loader";
import type { AdapterReport, BlobRef, GpuCall, GpuLoad, GpuProfile } from "./wire/schema.gen";
import type * as TVMBundle from "./tvm";
import { baseUrlFor, installModelFiles } from "./engine/model_files";
import type { ModelFile } from "./engine/types";

type Bundle = typeof TVMBundle;
export type { AdapterReport };

interface LogEntry {
  text: string;
  kind: "info" | "error";
}

/** Page-side state of one widget model, shared by all its views. */
class GPUState {
  adapter: AdapterReport | null = null;
  adapterError = "";
  status = "starting";
  log: LogEntry[] = [];
  libraries = new Map<string, Promise<TVMBundle.GPULibrary>>();
  refs = new Map<string, BlobRef>();
  private listeners = new Set<() => void>();

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
  changed(): void {
    for (const fn of this.listeners) fn();
  }
  note(text: string, kind: LogEntry["kind"] = "info"): void {
    this.log.push({ text, kind });
    if (this.log.length > 50) this.log.shift();
    this.changed();
  }
}

// Hosts may hand initialize() and render() different wrapper objects for the same model (JupyterLab's
// anywidget does), so views find their model's state by a per-instance id the kernel sets.
const states = new Map<string, GPUState>();
const keyOf = (model: AnyModel) => String(model.get("_instance_id") ?? "");

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new PageError("no-webgpu", `${what} did not answer within ${ms / 1000} s`)), ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

/** Ask the browser for its WebGPU adapter and describe it (null when there is none). */
export async function probeAdapter(): Promise<{ adapter: AdapterReport | null; error: string }> {
  const gpu = (navigator as Navigator & { gpu?: GPU }).gpu;
  if (!gpu) {
    return {
      adapter: null,
      error: window.isSecureContext
        ? "This browser has no WebGPU (navigator.gpu is missing). Use a recent Chrome, Edge or Firefox with WebGPU enabled."
        : "WebGPU needs a secure context: open the notebook over https or from localhost/127.0.0.1.",
    };
  }
  try {
    const adapter = await withTimeout(gpu.requestAdapter({ powerPreference: "high-performance" }), 10000, "navigator.gpu.requestAdapter()");
    if (!adapter) return { adapter: null, error: "WebGPU is present but the browser offered no adapter (GPU blocklisted or disabled)." };
    const info = (adapter as GPUAdapter & { info?: GPUAdapterInfo }).info ?? ({} as GPUAdapterInfo);
    const limits: Record<string, number> = {};
    // GPUSupportedLimits exposes its values as prototype getters.
    for (const key of Object.keys(Object.getPrototypeOf(adapter.limits))) {
      const v = (adapter.limits as unknown as Record<string, unknown>)[key];
      if (typeof v === "number") limits[key] = v;
    }
    const fallback =
      (info as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter ??
      (adapter as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter ?? false;
    return {
      adapter: {
        vendor: info.vendor ?? "",
        architecture: info.architecture ?? "",
        device: info.device ?? "",
        description: info.description ?? "",
        isFallbackAdapter: !!fallback,
        features: Array.from(adapter.features as Set<string>).sort(),
        limits,
      },
      error: "",
    };
  } catch (err) {
    return { adapter: null, error: describeError(err).message };
  }
}

function toRaw(spec: { shape: number[]; dtype: string }, buf: DataView): TVMBundle.RawTensor {
  return { shape: spec.shape, dtype: spec.dtype, data: new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength) };
}

function initialize({ model }: { model: AnyModel }) {
  const state = new GPUState();
  states.set(keyOf(model), state);
  const channel = new PageChannel(model);
  const loader = new BlobLoader(channel);
  let bundle: Promise<Bundle> | undefined;
  const tvmBundle = (runtime: BlobRef, progress?: (ref: BlobRef, received: number, fromCache: boolean) => void) => {
    if (!state.adapter) throw new PageError("no-webgpu", state.adapterError || "No WebGPU adapter on this page.");
    if (!bundle) {
      bundle = loader.importModule<Bundle>(runtime, progress);
      bundle.catch(() => { bundle = undefined; }); // a failed import may be retried by the next load
    }
    return bundle;
  };

  channel.on("load", async (raw) => {
    const msg = raw as Envelope & GpuLoad;
    const { runtime, library } = msg;
    state.status = `loading ${library.name}`;
    state.changed();
    let last = 0;
    const progress = (ref: BlobRef, received: number, fromCache: boolean) => {
      const now = performance.now();
      if (received < ref.size && now - last < 200) return;
      last = now;
      state.status = `loading ${ref.name}: ${fromCache ? "from the page's cache" : `${Math.round((100 * received) / Math.max(ref.size, 1))}%`}`;
      state.changed();
      channel.reply(msg, "progress", { name: ref.name, received, size: ref.size, cached: fromCache });
    };
    try {
      const tvm = await tvmBundle(runtime, progress);
      state.refs.set(library.sha256, library);
      let lib = state.libraries.get(library.sha256);
      if (!lib) {
        lib = loader.get(library, progress).then((wasm) => tvm.GPULibrary.create(wasm));
        state.libraries.set(library.sha256, lib);
        lib.catch(() => state.libraries.delete(library.sha256));
      }
      await lib;
      state.status = "ready";
      state.note(`loaded ${library.name} (${(library.size / 1e6).toFixed(2)} MB, sha256 ${library.sha256.slice(0, 12)}…)`);
      channel.reply(msg, "result", { sha256: library.sha256 });
    } catch (err) {
      const e = describeError(err, "bad-artifact");
      state.status = "error";
      state.note(`load ${library?.name}: [${e.code}] ${e.message}`, "error");
      channel.replyError(msg, err, "bad-artifact");
    }
  });

  channel.on("call", async (raw, buffers) => {
    const msg = raw as Envelope & GpuCall;
    const specs = msg.args;
    const fn = String(msg.fn);
    try {
      const sha = String(msg.library);
      let lib = state.libraries.get(sha);
      if (!lib) throw new PageError("bad-artifact", "That library is not loaded on this page; call gpu.load() again.");
      if ((await lib).broken) {
        // An earlier error ended its wasm instance: start a fresh one from the same (cached) bytes.
        const ref = state.refs.get(sha)!;
        lib = Promise.all([bundle!, loader.get(ref)]).then(([tvm, wasm]) => tvm.GPULibrary.create(wasm));
        state.libraries.set(sha, lib);
      }
      const g = await lib;
      const args = specs.map((s, i) => toRaw(s, buffers[i]));
      const repeat = Number(msg.repeat ?? 0);
      if (repeat > 0) {
        const timings = await g.time(fn, args, repeat, Number(msg.warmup ?? 1));
        const med = [...timings.runs_ms].sort((a, b) => a - b)[Math.floor(timings.runs_ms.length / 2)];
        state.note(`${fn}: ${repeat} runs, median ${med.toFixed(3)} ms (${timings.method})`);
        channel.reply(msg, "result", { timings });
        return;
      }
      const t0 = performance.now();
      const outs = await g.call(fn, args);
      state.note(`${fn}(${specs.map((s) => `${s.dtype}[${s.shape.join("×")}]`).join(", ")}) → ` +
        `${outs.map((o) => `${o.dtype}[${o.shape.join("×")}]`).join(", ")} in ${(performance.now() - t0).toFixed(1)} ms`);
      channel.reply(msg, "result", { outputs: outs.map((o) => ({ shape: o.shape, dtype: o.dtype })) }, outs.map((o) => o.data));
      // Written only by the page, after the kernel got the result: a host that runs code again when the page
      // changes a widget's state (marimo's mo.ui.anywidget) re-runs the cells that read this widget then.
      model.set("calls_done", (Number(model.get("calls_done")) || 0) + 1);
      model.save_changes();
    } catch (err) {
      const e = describeError(err, "kernel-error");
      state.note(`${fn}: [${e.code}] ${e.message}`, "error");
      channel.replyError(msg, err, "kernel-error");
    }
  });

  // Profile a model library: its files go to the page's Cache Storage as a Chat's do (a model a Chat loaded on
  // this page is there already, so nothing is sent again), then teach/profile_model.ts runs it on this GPU.
  channel.on("profile", async (raw) => {
    const msg = raw as Envelope & GpuProfile;
    const requested = msg.model;
    try {
      const tvm = await tvmBundle(msg.runtime);
      const a = state.adapter!;
      const software = a.isFallbackAdapter || a.architecture === "swiftshader";
      const spec = software && requested.webgpu_fallback ? requested.webgpu_fallback : requested;
      const byName = new Map<string, ModelFile>([...(requested.files ?? []), ...(requested.webgpu_fallback?.files ?? [])]
        .map((f) => [f.sha256, f]));
      state.status = `profiling ${spec.id}: copying its files`;
      state.changed();
      const installed = await installModelFiles(spec, async (f, onBytes) => ({
        verified: await loader.get(byName.get(f.sha256) ?? { ...f }, (_ref, received) => onBytes?.(received), { store: false }),
      }));
      const base = baseUrlFor(spec);
      const read = async (scope: string, name: string) => {
        const r = await (await caches.open(scope)).match(base + name);
        if (!r) throw new PageError("bad-artifact", `${name} of ${spec.id} is not in this page's cache`);
        return r;
      };
      const wasm = await (await read("webllm/wasm", spec.lib!)).arrayBuffer();
      const config = await (await read("webllm/config", "mlc-chat-config.json")).json();
      state.status = `profiling ${spec.id}: ${Number(msg.prompt)} prompt tokens, ${Number(msg.steps)} decode steps`;
      state.changed();
      const dev = await tvm.createDevice(); // its own device: disposing the profile's tvmjs instance destroys it
      const p = await tvm.profileModel({ wasm, base, cacheScope: "webllm/model", config, promptLen: Number(msg.prompt),
        steps: Number(msg.steps), device: dev.device, timestamps: dev.timestamps });
      const ms = p.decode.map((d) => d.wall_ms).sort((x, y) => x - y);
      state.status = "ready";
      state.note(`profiled ${spec.id}: decode step ${ms[Math.floor(ms.length / 2)].toFixed(1)} ms, ` +
        `${p.decode[0]?.passes.length ?? 0} dispatches (${p.timestamps ? "timestamp queries" : "wall clock only"})`);
      channel.reply(msg, "result", { ...p, model_key: spec.key, model_id: spec.id, bytes_installed: installed });
    } catch (err) {
      const e = describeError(err, "kernel-error");
      state.status = "error";
      state.note(`profile: [${e.code}] ${e.message}`, "error");
      channel.replyError(msg, err, "kernel-error");
    }
  });

  // A kernel-side error without an id is a notice for the user (e.g. a wrong argument caught in Python).
  channel.on("error", (msg) => {
    if (msg.id) return;
    state.note(`[${String(msg.code)}] ${String(msg.message)}`, "error");
  });

  void probeAdapter().then(({ adapter, error }) => {
    state.adapter = adapter;
    state.adapterError = error;
    state.status = adapter ? "ready" : "no WebGPU";
    state.changed();
    channel.ready({ adapter, webgpu_error: error, page: { secure: window.isSecureContext, userAgent: navigator.userAgent } });
  });

  return () => {
    channel.close();
    states.delete(keyOf(model));
  };
}

const CSS = `
.wlw-gpu { font: 13px/1.4 system-ui, sans-serif; border: 1px solid #8884; border-radius: 6px; padding: 8px 10px; }
.wlw-gpu h4 { margin: 0 0 4px; font-size: 13px; }
.wlw-gpu table { border-collapse: collapse; }
.wlw-gpu td { padding: 0 10px 0 0; vertical-align: top; }
.wlw-gpu .err { color: #c62828; white-space: pre-wrap; }
.wlw-gpu .log { font-family: ui-monospace, monospace; font-size: 12px; max-height: 12em; overflow: auto; }
.wlw-gpu details { margin-top: 4px; }
`;

function esc(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]!);
}

function render({ model, el }: { model: AnyModel; el: HTMLElement }) {
  const state = states.get(keyOf(model));
  const root = document.createElement("div");
  root.className = "wlw-gpu";
  const style = document.createElement("style");
  style.textContent = CSS;
  el.append(style, root);
  const draw = () => {
    if (!state) {
      root.innerHTML = "<span class='err'>webllm-widget: the widget did not initialize.</span>";
      return;
    }
    const a = state.adapter;
    const head = a
      ? `<h4>WebGPU: ${esc(a.vendor || "?")} ${esc(a.architecture)}${a.isFallbackAdapter ? " (software fallback adapter)" : ""}</h4>
         <table><tr><td>features</td><td>${esc(a.features.join(", ") || "none")}</td></tr>
         <tr><td>shader-f16</td><td>${a.features.includes("shader-f16") ? "yes" : "no"}</td></tr>
         <tr><td>max buffer</td><td>${(a.limits.maxBufferSize / 2 ** 20).toFixed(0)} MiB</td></tr>
         <tr><td>workgroup</td><td>${a.limits.maxComputeInvocationsPerWorkgroup} invocations, ${(a.limits.maxComputeWorkgroupStorageSize / 1024).toFixed(0)} KiB shared</td></tr></table>
         <details><summary>all limits</summary><table>${Object.entries(a.limits)
           .map(([k, v]) => `<tr><td>${esc(k)}</td><td>${v}</td></tr>`).join("")}</table></details>`
      : state.adapterError
        ? `<h4>WebGPU unavailable</h4><div class="err">${esc(state.adapterError)}</div>`
        : "<h4>WebGPU: asking the browser for an adapter…</h4>";
    const log = state.log.map((e) => `<div class="${e.kind === "error" ? "err" : ""}">${esc(e.text)}</div>`).join("");
    root.innerHTML = `${head}<div>status: ${esc(state.status)}</div><div class="log">${log}</div>`;
  };
  draw();
  const off = state?.subscribe(draw);
  return () => off?.();
}

export default { initialize, render };
