// Turns chat messages into the prompt text with mlc-chat-config.json's conv_template, the way web-llm does
// (system template, role prefixes, role_content_sep, seps cycling, the open assistant header at the end),
// so the CPU path and the WebGPU path see the same prompt for the same conversation.
import type { ChatMessage } from "../types";

export interface ConvTemplate {
  system_template: string;
  system_message: string;
  roles: Record<string, string>;
  role_templates?: Record<string, string>;
  seps: string[];
  role_content_sep?: string;
  role_empty_sep?: string;
  stop_str?: string[];
  stop_token_ids?: number[];
  add_role_after_system_message?: boolean;
  /** false: the model has no system role (Gemma 2's template refuses one); see foldSystemMessage */
  system_role?: boolean;
}

const PLACEHOLDER: Record<string, string> = {
  user: "{user_message}",
  assistant: "{assistant_message}",
  tool: "{tool_message}",
};

/**
 * For a template whose model has no system role (`system_role: false`, Gemma 2), a leading system message becomes
 * the start of the first user turn, followed by a blank line, as Gemma 3's own template writes it; the template
 * itself has no system part, so a conversation without one is exactly what the model's Jinja template renders.
 * Both engines apply it (web-llm would leave the text out).
 */
export function foldSystemMessage<M extends { role: string; content: unknown }>(
  messages: M[], conv: { system_role?: boolean } | null | undefined): M[] {
  if (conv?.system_role !== false || messages.length === 0 || messages[0].role !== "system") return messages;
  const [system, ...rest] = messages;
  const text = typeof system.content === "string" ? system.content : "";
  const first = rest.findIndex((m) => m.role === "user");
  if (text === "") return rest;
  if (first < 0 || typeof rest[first].content !== "string") {
    throw new Error("this model has no system role: its system text goes into the first user message, and there is none");
  }
  return rest.map((m, i) => (i === first ? { ...m, content: `${text}\n\n${m.content as string}` } : m));
}

/** The prompt for `messages` followed by the assistant's open turn. A leading system message replaces the default. */
export function renderPrompt(conv: ConvTemplate, messages: ChatMessage[]): string {
  if (!conv.seps || conv.seps.length === 0) throw new Error("conv_template has no seps");
  let system = conv.system_message ?? "";
  const turns = messages.filter((m, i) => {
    if (m.role === "system") {
      if (i !== 0) throw new Error("a system message may only come first");
      system = m.content;
      return false;
    }
    return true;
  });
  const sysPrompt = conv.system_template.replace("{system_message}", system);
  const parts: string[] = sysPrompt !== "" ? [sysPrompt] : [];
  const contentSep = conv.role_content_sep ?? ": ";
  const emptySep = conv.role_empty_sep ?? ": ";
  turns.forEach((m, i) => {
    const roleStr = conv.roles[m.role] ?? m.role;
    const tmpl = conv.role_templates?.[m.role];
    const text = tmpl !== undefined ? tmpl.replace(PLACEHOLDER[m.role] ?? "", m.content) : m.content;
    const prefix = conv.add_role_after_system_message === false && sysPrompt !== "" && i === 0 ? "" : roleStr + contentSep;
    parts.push(prefix + text + conv.seps[i % conv.seps.length]);
  });
  parts.push((conv.roles.assistant ?? "assistant") + emptySep);
  return parts.join("");
}
