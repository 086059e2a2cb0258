// Prints xgrammar's EBNF for the JSON schema given as argv[2], compiled as web-llm 0.2.85 compiles a response_format
// schema (default arguments: any whitespace). Used by bench/prompt_cache.py for the baseline of one-line JSON.
// web-xgrammar is a UMD file in a "type": "module" package: give it the CommonJS globals it looks for.
import { createRequire } from "module";
import path from "path";

const require = createRequire(path.join(process.cwd(), "js", "package.json"));
const main = require.resolve("@mlc-ai/web-xgrammar");
globalThis.require = require;
globalThis.__filename = main;
await import(main);
const g = await globalThis.xgrammar.Grammar.fromJSONSchema(process.argv[2]);
process.stdout.write(g.toString());
g.dispose();
