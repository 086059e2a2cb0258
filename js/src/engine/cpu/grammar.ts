// Structured output on the CPU engine: `response_format` (JSON object, JSON schema, EBNF grammar) compiled by
// xgrammar (npm @mlc-ai/web-xgrammar, the matcher web-llm runs on WebGPU) against the model's vocabulary; at each
// step the matcher's bitmask sets the logits of the tokens the grammar forbids to -Infinity, and the token drawn
// is fed back to it. Formats are read as web-llm reads them (engine/worker.ts webllmFormat), so both engines
// constrain the same request the same way.
import "@mlc-ai/web-xgrammar";
import type * as XG from "@mlc-ai/web-xgrammar";
import { EngineError, type ResponseFormat } from "../types";
import { compactJSONGrammar } from "../json_grammar";
import { structuralTagOf } from "../tool_grammar";

// web-xgrammar ships a UMD file in a "type": "module" package (as web-tokenizers does, cpu/engine.ts): bundlers
// see no ESM exports, and the UMD wrapper puts the classes on globalThis.xgrammar.
const { GrammarCompiler, GrammarMatcher, TokenizerInfo } = (globalThis as unknown as { xgrammar: typeof XG }).xgrammar;
type GrammarCompiler = XG.GrammarCompiler;
type GrammarMatcher = XG.GrammarMatcher;
type TokenizerInfo = XG.TokenizerInfo;
type CompiledGrammar = XG.CompiledGrammar;

/** How the tokenizer's token strings decode to bytes (mlc-chat-config.json `tokenizer_info`). */
export interface TokenizerInfoConfig {
  token_postproc_method?: string;
  prepend_space_in_encode?: boolean;
}

/** The JSON schema string of a format, as web-llm takes it ({"type": "object"} for plain JSON mode). */
function schemaOf(f: ResponseFormat): string | null {
  if (f.type === "json_object") return f.schema ?? JSON.stringify({ type: "object" });
  if (f.type === "json_schema") {
    const s = f.json_schema?.schema;
    return s === undefined ? JSON.stringify({ type: "object" }) : typeof s === "string" ? s : JSON.stringify(s);
  }
  return null;
}

/** One model's grammar compiler; compiled grammars are kept by format (a batch of one schema compiles once). */
export class CpuGrammars {
  private compiler: Promise<GrammarCompiler> | null = null;
  private info: TokenizerInfo | null = null;
  private compiled = new Map<string, Promise<CompiledGrammar>>();

  constructor(
    private tokenTable: () => string[],
    private vocabSize: number,
    private stopIds: number[],
    private tokInfo: TokenizerInfoConfig | undefined,
  ) {}

  private compilerOnce(): Promise<GrammarCompiler> {
    this.compiler ??= (async () => {
      this.info = await TokenizerInfo.createTokenizerInfo(this.tokenTable(), this.tokInfo?.token_postproc_method ?? "byte_level",
        this.tokInfo?.prepend_space_in_encode ?? false, this.vocabSize, this.stopIds);
      return GrammarCompiler.createGrammarCompiler(this.info);
    })();
    return this.compiler;
  }

  /** A fresh matcher for `format`; BadRequest-coded error when the schema or grammar does not compile. */
  async matcher(format: ResponseFormat): Promise<GrammarMatcher> {
    const key = JSON.stringify(format);
    let c = this.compiled.get(key);
    if (!c) {
      c = (async () => {
        const compiler = await this.compilerOnce();
        const schema = schemaOf(format);
        if (schema !== null) return compiler.compileGrammar(await compactJSONGrammar(schema)); // one line, as on WebGPU
        if (format.type === "grammar") return compiler.compileGrammar(format.grammar);
        if (format.type === "tool_calls") return compiler.compileStructuralTag(await structuralTagOf(format));
        throw new EngineError("bad-request", `response_format type ${(format as { type?: string }).type} is not one of text, json_object, json_schema, grammar`);
      })();
      this.compiled.set(key, c);
      c.catch(() => this.compiled.delete(key));
    }
    try {
      return await GrammarMatcher.createGrammarMatcher(await c);
    } catch (e) {
      if (e instanceof EngineError) throw e;
      throw new EngineError("bad-request", `response_format ${format.type} could not be compiled: ${String((e as Error)?.message ?? e)}`,
        { parameter: "response_format" });
    }
  }

  dispose(): void {
    for (const c of this.compiled.values()) c.then((g) => g.dispose(), () => undefined);
    this.compiled.clear();
    this.compiler?.then((g) => g.dispose(), () => undefined);
    this.compiler = null;
    this.info?.dispose();
    this.info = null;
  }
}

/** Sets the logits of the tokens `bitmask` forbids (bit i of word i/32 clear) to -Infinity, in place. */
export function applyBitmask(logits: Float32Array, bitmask: Int32Array): void {
  for (let i = 0; i < logits.length; i++) {
    if (((bitmask[i >>> 5] >>> (i & 31)) & 1) === 0) logits[i] = -Infinity;
  }
}
