// The CPU engine's prompt rendering (web-llm's rules) and the fold of a system message into the first user turn for
// models without a system role (Gemma 2), which both engines apply before rendering.
import { test } from "node:test";
import assert from "node:assert/strict";
import { foldSystemMessage, renderPrompt } from "../src/engine/cpu/template.ts";

// what compile/chat_config.py writes for Gemma 2's template (no system part, system_role false)
const gemma2 = {
  system_template: "", system_message: "", system_role: false, add_role_after_system_message: true,
  roles: { user: "<start_of_turn>user", assistant: "<start_of_turn>model", tool: "<start_of_turn>user" },
  role_templates: { user: "{user_message}", assistant: "{assistant_message}", tool: "{tool_message}" },
  seps: ["<end_of_turn>\n"], role_content_sep: "\n", role_empty_sep: "\n",
};
const turns = [{ role: "user", content: "Capital of France?" }, { role: "assistant", content: "Paris." },
  { role: "user", content: "And Italy?" }];

test("without a system message the turns are rendered as they are", () => {
  assert.deepEqual(foldSystemMessage(turns, gemma2), turns);
  assert.equal(renderPrompt(gemma2, foldSystemMessage(turns, gemma2)),
    "<start_of_turn>user\nCapital of France?<end_of_turn>\n<start_of_turn>model\nParis.<end_of_turn>\n" +
    "<start_of_turn>user\nAnd Italy?<end_of_turn>\n<start_of_turn>model\n");
});

test("a system message opens the first user turn, then a blank line; an empty one is dropped", () => {
  const folded = foldSystemMessage([{ role: "system", content: "One word." }, ...turns], gemma2);
  assert.equal(folded.length, 3);
  assert.equal(renderPrompt(gemma2, folded).split("<end_of_turn>")[0], "<start_of_turn>user\nOne word.\n\nCapital of France?");
  assert.deepEqual(foldSystemMessage([{ role: "system", content: "" }, ...turns], gemma2), turns);
  assert.throws(() => foldSystemMessage([{ role: "system", content: "x" }, { role: "assistant", content: "y" }], gemma2),
    /no system role/);
});

test("templates with a system role keep the system message", () => {
  const chatml = { ...gemma2, system_role: undefined };
  const msgs = [{ role: "system", content: "One word." }, ...turns];
  assert.equal(foldSystemMessage(msgs, chatml), msgs);
  assert.equal(foldSystemMessage(msgs, null), msgs);
});
