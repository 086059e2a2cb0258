// JSON answers as one line: the EBNF of JSON valid for a schema with Python json.dumps' separators (", " and ": ")
// and no other whitespace, for both engines (web-llm takes it as response_format {type: "grammar"}, the CPU engine
// compiles it with npm web-xgrammar).
//
// xgrammar's JSON grammar as web-llm 0.2.85 compiles it admits any whitespace between tokens, and small models
// spend much of a short answer on it: SmolLM2 answered the 20 schemas of tests/browser/test_structured_output.py
// with newlines and two-space indents, e.g. '{\n  "person": {\n    "name": "Ann",\n    "age": 30\n  }\n}'. The
// same values on one line take fewer tokens (the numbers are in the README), are what json.dumps writes and what
// chat templates write for tool arguments, and parse to the same JSON.
import "@mlc-ai/web-xgrammar";
import type * as XG from "@mlc-ai/web-xgrammar";

const { Grammar } = (globalThis as unknown as { xgrammar: typeof XG }).xgrammar;

const built = new Map<string, Promise<string>>();

/** EBNF of one-line JSON valid for `schema` (a JSON schema, or its JSON text); strict: no properties or items
 * beyond the schema's. Kept by schema; a schema that does not compile rejects (and is not kept). */
export function compactJSONGrammar(schema: unknown): Promise<string> {
  const text = typeof schema === "string" ? schema : JSON.stringify(schema);
  let p = built.get(text);
  if (!p) {
    p = (async () => {
      const g = await Grammar.fromJSONSchema(text, false, -1, [", ", ": "], true);
      try {
        return g.toString();
      } finally {
        g.dispose();
      }
    })();
    built.set(text, p);
    p.catch(() => built.delete(text));
  }
  return p;
}
