// Bundles js/src into src/webllm_widget/static/: small anywidget entries (_esm) and the bigger
// bundles the kernel ships to the page as content-addressed blobs. `node build.mjs [--watch]`.
import * as esbuild from "esbuild";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const outdir = join(here, "..", "src", "webllm_widget", "static");
mkdirSync(outdir, { recursive: true });

// [source, output, format]. A missing source is an error: the Python side loads every one of these outputs.
const ENTRIES = [
  ["src/gpu_widget.ts", "gpu_widget.js", "esm"], // _esm of webllm_widget.WebGPU
  ["src/tvm.ts", "tvmjs.js", "esm"], // tvmjs runtime + GPULibrary, shipped as a blob
  ["src/chat_widget.ts", "chat_widget.js", "esm"], // _esm of webllm_widget.Chat
  ["src/engine/worker.ts", "engine_worker.js", "iife"], // web-llm engine worker, shipped as a blob
  ["src/engine/runner_host.ts", "runner.js", "esm"], // page of the headless runner (webllm-widget chat)
  ["src/engine/cpu/model.ts", "cpu_model.js", "esm"], // CPU model runner alone (tests, bench/cpu.py)
];

// web-llm bundles its own tvmjs and does not export it; engine/webllm_dispatch.ts needs that copy's Instance to
// put batched dispatch (engine/dispatch.ts) under every model web-llm loads. Re-export it from web-llm's module,
// and stop the build when the file no longer has the line this relies on (a web-llm upgrade must revisit it).
const WEBLLM_TVMJS = "var libExports$2 = requireLib$2();";
const webllmRuntime = {
  name: "webllm-tvmjs-export",
  setup(build) {
    build.onLoad({ filter: /@mlc-ai[\\/]web-llm[\\/]lib[\\/]index\.js$/ }, (args) => {
      const src = readFileSync(args.path, "utf8");
      if (src.split(WEBLLM_TVMJS).length !== 2 || !src.includes("exports.Instance = Instance;")) {
        throw new Error(`${args.path}: web-llm's bundled tvmjs is no longer "${WEBLLM_TVMJS}" with an Instance export; ` +
          "update js/build.mjs and js/src/engine/webllm_dispatch.ts for this web-llm version");
      }
      return { contents: `${src}\nexport { libExports$2 as __tvmjsRuntime };\n`, loader: "js" };
    });
  },
};

const watch = process.argv.includes("--watch");
const common = {
  plugins: [webllmRuntime],
  bundle: true,
  minify: !watch,
  sourcemap: false,
  target: ["es2022"],
  platform: "browser",
  legalComments: "none",
  logLevel: "warning",
  // tvmjs reaches for these only under Node; in the page they are never required.
  external: ["fs", "path", "perf_hooks", "crypto", "ws", "url", "child_process", "module", "os", "worker_threads"],
};

const missing = ENTRIES.filter(([src]) => !existsSync(join(here, src))).map(([src]) => src);
if (missing.length) throw new Error(`build.mjs names sources that do not exist: ${missing.join(", ")}`);

const builds = ENTRIES.map(([src, out, format]) => ({
  ...common,
  entryPoints: [join(here, src)],
  outfile: join(outdir, out),
  format,
}));

if (watch) {
  for (const b of builds) await (await esbuild.context(b)).watch();
} else {
  await Promise.all(builds.map((b) => esbuild.build(b)));
}
