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
}

const PLACEHOLDER: Record<string, string> = {
  user: "{user_message}",
  assistant: "{assistant_message}",
  tool: "{tool_message}",
};

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
