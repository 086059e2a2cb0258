// The grammar of tool calls (response_format {type: "tool_calls"}, written by the kernel's widgets/tool_calls.py) as
// an xgrammar structural tag, for both engines: web-llm takes it as response_format {type: "structural_tag"}, the CPU
// engine compiles it with npm web-xgrammar (cpu/grammar.ts). Each call is the model's call text up to the arguments
// (forced), the arguments as compact JSON valid for the function's parameters schema, then the call's closing text.
// "required" admits calls only (at least one); "auto" admits any text, and a call the model opens (the trigger) is
// held to the same grammar. The arguments' JSON is written as chat templates write it (json.dumps: ", " and ": ",
// one line), not with xgrammar's default indentation: the model saw calls in that form.
// "auto" with a response_format (`content`) admits one call or an answer in that format: xgrammar's structural tag
// takes single tags, JSON schemas and grammars as elements of an "or", but not a repeated list of tags (xgrammar
// 0.1.27 refuses tags_with_separator inside "or"), so that mode makes one call at most.
import { compactJSONGrammar } from "./json_grammar";
import { EngineError, type ToolCallsFormat } from "./types";

const built = new Map<string, Promise<string>>();

/** A response_format as an element of a structural tag: its grammar (JSON on one line, json_grammar.ts; JSON
 * mode: any object, as OpenAI's JSON mode asks). */
async function contentElement(c: NonNullable<ToolCallsFormat["content"]>): Promise<Record<string, unknown>> {
  if (c.type === "grammar") return { type: "grammar", grammar: c.grammar };
  const schema = c.type === "json_object" ? c.schema ?? { type: "object" } : c.json_schema?.schema ?? { type: "object" };
  try {
    return { type: "grammar", grammar: await compactJSONGrammar(schema) };
  } catch (e) {
    throw new EngineError("bad-request", `response_format: the JSON schema could not be compiled: ${String((e as Error)?.message ?? e)}`,
      { parameter: "response_format" });
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
          grammar = await compactJSONGrammar(t.schema);
        } catch (e) {
          throw new EngineError("bad-request", `tools: the parameters schema of a function could not be compiled: ${String((e as Error)?.message ?? e)}`,
            { parameter: "tools" });
        }
        tags.push({ type: "tag", begin: t.begin, content: { type: "grammar", grammar }, end: t.end });
      }
      const format = f.mode === "required"
        ? { type: "tags_with_separator", tags, separator: f.separator, at_least_one: true, stop_after_first: !f.parallel }
        : f.content
          ? { type: "or", elements: [...tags, await contentElement(f.content)] }
          : { type: "triggered_tags", triggers: [f.trigger], tags, at_least_one: false, stop_after_first: !f.parallel };
      return JSON.stringify({ type: "structural_tag", format });
    })();
    built.set(key, p);
    p.catch(() => built.delete(key));
  }
  return p;
}
