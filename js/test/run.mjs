// Runs the JS unit tests (test/*.test.mjs) with Node's built-in runner. Each test file imports TypeScript from
// src/, so it is first bundled by esbuild (already the project's bundler) into a temporary folder; `node --test`
// then runs the bundles. Only modules that need no browser are tested here: the browser tests cover the rest.
//   node test/run.mjs            every test file
//   node test/run.mjs kv_fit     the files whose name contains "kv_fit"
import * as esbuild from "esbuild";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const filters = process.argv.slice(2);
const files = readdirSync(here)
  .filter((f) => f.endsWith(".test.mjs") && (!filters.length || filters.some((x) => f.includes(x))))
  .sort();
if (!files.length) {
  console.error(`no test files in ${here}${filters.length ? ` matching ${filters.join(", ")}` : ""}`);
  process.exit(1);
}
const out = mkdtempSync(join(tmpdir(), "webllm-widget-js-test-"));
try {
  await esbuild.build({
    entryPoints: files.map((f) => join(here, f)),
    outdir: out,
    outExtension: { ".js": ".mjs" }, // ES modules whatever package.json the folder lacks
    bundle: true,
    format: "esm",
    platform: "node",
    target: ["node18"],
    logLevel: "warning",
    packages: "bundle",
    external: ["node:*"],
  });
  const bundles = files.map((f) => join(out, basename(f)));
  const r = spawnSync(process.execPath, ["--test", "--test-reporter=spec", ...bundles], { stdio: "inherit" });
  process.exitCode = r.status ?? 1;
} finally {
  rmSync(out, { recursive: true, force: true });
}
