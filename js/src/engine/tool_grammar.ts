// The grammar of tool calls (response_format {type: "tool_calls"}, written by the kernel's widgets/tool_calls.py) as
// an xgrammar structural tag, for both engines: web-llm takes it as response_format {type: "structural_tag"}, the CPU
// engine compiles it with npm web-xgrammar (cpu/grammar.ts). Each call is the model's call text up to the arguments
// (forced), the arguments as compact JSON valid for the function's parameters schema, then the call's closing text.
// "required" admits calls only (at least one); "auto" admits any text, and a call the model opens (the trigger) is
// held to the same grammar. The arguments' JSON is written as chat templates write it (json.dumps: ", " and ": ",
// one line), not with xgrammar's default indentation: the model saw calls in that form.
import "@mlc-ai/web-xgrammar";
import type * as XG from "@mlc-ai/web-xgrammar";
import { EngineError, type ToolCallsFormat } from "./types";

const { Grammar } = (globalThis as unknown as { xgrammar: typeof XG }).xgrammar;

const built = new Map<string, Promise<string>>();

/** EBNF of one-line JSON valid for `schema` (strict: no properties beyond the schema's). */
async function argumentsGrammar(schema: unknown): Promise<string> {
  const g = await Grammar.fromJSONSchema(typeof schema === "string" ? schema : JSON.stringify(schema), false, -1, [", ", ": "], true);
  try {
    return g.toString();
  } finally {
    g.dispose();
  }
}

/** The structural tag (a JSON string) for `f`; BadRequest-coded error when a parameters schema does not compile. */
export function structuralTagOf(f: ToolCallsFormat): Promise<string> {
  const key = JSON.stringify(f);
  let p = built.get(key);
  if (!p) {
    p = (async () => {
      const tags = [];
      for (const t of f.tags) {
        let grammar: string;
        try {
          grammar = await argumentsGrammar(t.schema);
        } catch (e) {
          throw new EngineError("bad-request", `tools: the parameters schema of a function could not be compiled: ${String((e as Error)?.message ?? e)}`,
            { parameter: "tools" });
        }
        tags.push({ type: "tag", begin: t.begin, content: { type: "grammar", grammar }, end: t.end });
      }
      const format = f.mode === "required"
        ? { type: "tags_with_separator", tags, separator: f.separator, at_least_one: true, stop_after_first: !f.parallel }
        : { type: "triggered_tags", triggers: [f.trigger], tags, at_least_one: false, stop_after_first: !f.parallel };
      return JSON.stringify({ type: "structural_tag", format });
    })();
    built.set(key, p);
    p.catch(() => built.delete(key));
  }
  return p;
}
