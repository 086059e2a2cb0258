// The engine's host for the headless runner and the browser tests: a plain page (no anywidget) that exposes
// `window.webllmRunner` to the driver (Playwright) and reports progress and tokens through `window.__emit`.
import { sharedEngine, type WorkerEngine } from "./host";
import type { ChatMessage, GenerateSettings, ModelFile, ModelSpec } from "./types";
import { toEngineError } from "./errors";

type Emit = (event: Record<string, unknown>) => void;
const emit: Emit = (e) => {
  const w = globalThis as unknown as { __emit?: Emit };
  w.__emit?.(e);
};

let engine: Promise<WorkerEngine> | null = null;
function getEngine() {
  engine = engine ?? sharedEngine(async () => (await fetch("/engine_worker.js")).blob());
  return engine;
}

// Files of a local model folder are served by the driver at /blob/<sha256>.
async function fromServer(f: ModelFile) {
  const r = await fetch(`/blob/${f.sha256}`);
  if (!r.ok) throw new Error(`Cannot fetch /blob/${f.sha256} (${f.name}): HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

async function guard<T>(fn: () => Promise<T>): Promise<T | { error: { code: string; message: string } }> {
  try {
    return await fn();
  } catch (e) {
    const err = toEngineError(e);
    return { error: { code: err.code, message: err.message } };
  }
}

const runner = {
  gpu: () => guard(async () => (await getEngine()).probe()),
  load: (spec: ModelSpec) =>
    guard(async () => (await getEngine()).load(spec, (p) => emit({ type: "progress", ...p }), fromServer)),
  generate: (messages: ChatMessage[], settings: GenerateSettings) =>
    guard(async () => (await getEngine()).generate(messages, settings, (d) => emit({ type: "delta", text: d }))),
  stop: async () => (await getEngine()).stop(),
  reset: () => guard(async () => (await getEngine()).reset()),
};

(globalThis as unknown as { webllmRunner: typeof runner }).webllmRunner = runner;
emit({ type: "runner-ready" });
