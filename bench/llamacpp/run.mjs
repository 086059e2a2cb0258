// Prefill and decode speed of llama.cpp (node-llama-cpp's prebuilt CPU binary) on one GGUF file.
//
//   node run.mjs --gguf PATH [--prompts 32,128] [--decode 32] [--runs 3] [--threads 1]
//   node run.mjs --gguf PATH --prompts-json FILE ...  (FILE: a JSON list of token-id lists, one per prompt)
//
// Prints one JSON object on stdout: per prompt length, prefill and decode tok/s (median, min, max, every run).
// Prompts are fixed token ids (no tokenizer pass), so the counts are exact; decoding is greedy
// (temperature 0). Nothing is built or downloaded: only the prebuilt linux-x64 binary is accepted.
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import { performance } from "node:perf_hooks";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

function parseArgs(argv) {
  const a = { prompts: "32,128", decode: 32, runs: 3, threads: 1, gguf: null, promptIds: null };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i], v = argv[i + 1];
    if (k === "--gguf") a.gguf = v;
    else if (k === "--prompts") a.prompts = v;
    else if (k === "--prompts-json") a.promptIds = JSON.parse(readFileSync(v, "utf8"));
    else if (k === "--decode") a.decode = Number(v);
    else if (k === "--runs") a.runs = Number(v);
    else if (k === "--threads") a.threads = Number(v);
    else throw new Error(`unknown argument ${k}`);
    i++;
  }
  if (!a.gguf) throw new Error("--gguf PATH is required");
  return a;
}

function packageVersion() {
  // The package's "exports" hide package.json: read it next to the resolved entry point.
  let dir = dirname(createRequire(import.meta.url).resolve("node-llama-cpp"));
  for (let i = 0; i < 4; i++, dir = dirname(dir)) {
    try { return JSON.parse(readFileSync(join(dir, "package.json"), "utf8")).version; } catch { /* go up */ }
  }
  return "?";
}

function summary(xs) {
  const s = [...xs].sort((x, y) => x - y);
  const m = s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  return { median: m, min: s[0], max: s[s.length - 1], runs: xs };
}

// The same kind of prompt as bench/cpu.py: ordinary vocabulary ids (100..), no control tokens.
const idsOfLength = (n) => Array.from({ length: n }, (_, i) => ((1009 + 37 * i) % 40000) + 100);

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const t0 = performance.now();
  // gpu:false + build:"never" + skipDownload: the prebuilt CPU binary or an error, never a source build.
  const llama = await getLlama({ gpu: false, build: "never", skipDownload: true, usePrebuiltBinaries: true,
                                 progressLogs: false, logLevel: LlamaLogLevel.error, maxThreads: a.threads });
  const model = await llama.loadModel({ modelPath: a.gguf, gpuLayers: 0, useMmap: true });
  const prompts = a.promptIds ? a.promptIds : a.prompts.split(",").filter(Boolean).map((n) => idsOfLength(Number(n)));
  const longest = Math.max(...prompts.map((p) => p.length));
  const context = await model.createContext({ contextSize: longest + a.decode + 16, batchSize: Math.max(512, longest),
                                              threads: { ideal: a.threads, min: a.threads }, sequences: 1 });
  const loadS = (performance.now() - t0) / 1000;
  const seq = context.getSequence();
  const out = { engine: "llama.cpp", binding: "node-llama-cpp", version: packageVersion(),
                llama_cpp_release: llama.llamaCppRelease?.release, gpu: llama.gpu, threads: a.threads,
                cpu_build: llama.buildType, load_s: loadS, decode_tokens: a.decode, runs: a.runs, prompts: {} };
  for (const ids of prompts) {
    const pre = [], dec = [], firstTokens = [];
    for (let r = 0; r < a.runs; r++) {
      await seq.clearHistory();
      // Prefill: the prompt alone, then one greedy token (the first yield) -- same work as the browser's prefill
      // step, which also ends with the last position's logits.
      // yieldEogToken: keep decoding past an end-of-generation token (a fixed count of decode steps, like the browser).
      const it = seq.evaluate(ids, { temperature: 0, yieldEogToken: true });
      const p0 = performance.now();
      const first = await it.next();
      const p1 = performance.now();
      const got = [first.value];
      for (let i = 0; i < a.decode; i++) {
        const step = await it.next();
        if (step.done) throw new Error(`generation stopped after ${got.length} tokens; expected ${a.decode + 1}`);
        got.push(step.value);
      }
      const p2 = performance.now();
      await it.return();
      pre.push(ids.length / ((p1 - p0) / 1000));
      dec.push(a.decode / ((p2 - p1) / 1000));
      if (r === 0) firstTokens.push(...got.slice(0, 8));
    }
    out.prompts[String(ids.length)] = { prompt_tokens: ids.length, prefill_tok_s: summary(pre),
                                        decode_tok_s: summary(dec), greedy_tokens_first_run: firstTokens };
  }
  await context.dispose();
  await model.dispose();
  await llama.dispose();
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((e) => {
  process.stderr.write(`llama.cpp benchmark failed: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
