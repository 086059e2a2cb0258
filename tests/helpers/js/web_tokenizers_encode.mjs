// Encode texts with @mlc-ai/web-tokenizers (the tokenizer build web-llm 0.2.85 bundles), from Node.
// usage: node web_tokenizers_encode.mjs <node_modules dir> <tokenizer.json> <texts.json>  -> JSON [{ids, text}]
import fs from "fs";
import path from "path";
import { createRequire } from "module";

const [modules, tokenizerPath, textsPath] = process.argv.slice(2);
const entry = path.join(modules, "@mlc-ai/web-tokenizers/lib/index.js");
// The package is a UMD bundle whose emscripten glue expects CommonJS globals under Node.
globalThis.require = createRequire(entry);
globalThis.__filename = entry;
globalThis.__dirname = path.dirname(entry);
await import(entry);
const { Tokenizer } = globalThis.tokenizers;
const json = fs.readFileSync(tokenizerPath);
const tok = await Tokenizer.fromJSON(json.buffer.slice(json.byteOffset, json.byteOffset + json.byteLength));
const texts = JSON.parse(fs.readFileSync(textsPath, "utf8"));
const out = texts.map((t) => {
  const ids = Array.from(tok.encode(t));
  return { ids, text: tok.decode(new Int32Array(ids)) };
});
process.stdout.write(JSON.stringify(out));
