// The page side of MLC's own web-llm release (npm @mlc-ai/web-llm, pinned in package.json) running one of MLC's
// prebuilt model libraries, behind the same small interface as the widget's runner page (window.webllmRunner:
// load / reset / generate), so bench/gpu/chrome_run.py times both with one loop. web-llm runs in a Worker
// (worker.js), as web-llm's own examples do and as the widget's engine does.
//
// The model is served from the bench's loopback server: /official/resolve/main/<file name> (config, tokenizer,
// ndarray-cache.json, shards, the library), the layout web-llm expects of a model URL.
import { CreateWebWorkerMLCEngine } from "@mlc-ai/web-llm";

let engine = null;
let modelId = null;

async function load(spec) {
  try {
    modelId = spec.id;
    const base = `${location.origin}/official/`;
    const appConfig = {
      model_list: [{ model: base, model_id: spec.id, model_lib: `${base}resolve/main/${spec.lib}` }],
      useIndexedDBCache: false,
    };
    const worker = new Worker("/official_worker.js", { type: "module" });
    engine = await CreateWebWorkerMLCEngine(worker, spec.id, {
      appConfig,
      initProgressCallback: (p) => window.__emit && window.__emit({ type: "progress", phase: "load", text: p.text }),
    });
    return { model: spec.id, schedule: "official", dispatch: "web-llm" };
  } catch (e) {
    return { error: { code: "official-load", message: String(e && e.stack || e) } };
  }
}

async function reset() {
  if (engine) await engine.resetChat(false, modelId);
}

async function generate(messages, opts) {
  try {
    const r = await engine.chat.completions.create({
      messages, temperature: opts.temperature ?? 0, max_tokens: opts.max_tokens, ignore_eos: !!opts.ignore_eos,
      stream: false,
    });
    const u = r.usage || {};
    const x = u.extra || {};
    return {
      text: r.choices[0].message.content, finish_reason: r.choices[0].finish_reason,
      usage: { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens,
               prefill_tokens_per_s: x.prefill_tokens_per_s, decode_tokens_per_s: x.decode_tokens_per_s,
               time_to_first_token_s: x.time_to_first_token_s },
      dispatch_stats: null,
    };
  } catch (e) {
    return { error: { code: "official-generate", message: String(e && e.stack || e) } };
  }
}

window.webllmRunner = { load, reset, generate };
