// The prompt ids web-llm 0.2.85 feeds its model for a chat completion request, computed by web-llm's own code in
// Node: its Conversation class and getConversationFromChatCompletionRequest (evaluated from the installed
// package, which does not export them) build the per-turn pieces exactly as the engine does (the request's
// history, the last user message appended, then the assistant reply header), and @mlc-ai/web-tokenizers (the
// tokenizer build web-llm bundles) encodes each piece on its own after system_prefix_token_ids, as the engine's
// getInputData does.
// usage: node webllm_prompt_ids.mjs <node_modules dir> <mlc-chat-config.json> <tokenizer.json> <messages.json>
//   -> JSON {pieces, ids}
import fs from "fs";
import path from "path";
import { createRequire } from "module";

const [modules, configPath, tokenizerPath, messagesPath] = process.argv.slice(2);
const src = fs.readFileSync(path.join(modules, "@mlc-ai/web-llm/lib/index.js"), "utf8");

function slice(startMarker, endMarker, inclusive = true) {
  const start = src.indexOf(startMarker);
  const end = src.indexOf(endMarker, start);
  if (start < 0 || end < 0) throw new Error(`web-llm's bundle changed: no ${JSON.stringify(startMarker)}`);
  return src.slice(start, inclusive ? end + endMarker.length : end);
}
const code = [
  slice("var Role;", "})(Role || (Role = {}));"),
  slice("var MessagePlaceholders;", "})(MessagePlaceholders || (MessagePlaceholders = {}));"),
  slice("class Conversation {", "\nfunction compareConversationObject(", false),
  slice("function getConversationFromChatCompletionRequest(", "\n    return conversation;\n}\n"),
].join("\n");
const build = new Function(`${code}\nreturn { Role, getConversationFromChatCompletionRequest };`);
const { Role, getConversationFromChatCompletionRequest } = build();

const entry = path.join(modules, "@mlc-ai/web-tokenizers/lib/index.js");
globalThis.require = createRequire(entry);
globalThis.__filename = entry;
globalThis.__dirname = path.dirname(entry);
await import(entry);
const json = fs.readFileSync(tokenizerPath);
const tok = await globalThis.tokenizers.Tokenizer.fromJSON(
  json.buffer.slice(json.byteOffset, json.byteOffset + json.byteLength));

const config = JSON.parse(fs.readFileSync(configPath, "utf8"));
const messages = JSON.parse(fs.readFileSync(messagesPath, "utf8"));
const conv = getConversationFromChatCompletionRequest({ messages }, config);
conv.appendMessage(Role.user, messages[messages.length - 1].content);   // the engine's prefillStep
conv.appendReplyHeader(Role.assistant);
const pieces = conv.getPromptArray(config);
const ids = [...(conv.config.system_prefix_token_ids ?? [])];
for (const p of pieces) ids.push(...Array.from(tok.encode(p)));
process.stdout.write(JSON.stringify({ pieces, ids }));
