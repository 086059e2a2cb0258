// The conversation as a file: Markdown (the same text as Python's `Chat.to_markdown()`) or JSON (the same
// `messages` as Python's `chat.messages`, with the model, system prompt and settings beside them).
import type { Msg } from "./chat_view";

const ROLE_TITLE: Record<string, string> = { system: "System", user: "User", assistant: "Assistant" };

/** One `## Role` section per message, the system prompt first when set. Mirrors Python's `to_markdown`. */
export function conversationMarkdown(messages: Msg[], systemPrompt: string): string {
  const all: Msg[] = [...(systemPrompt ? [{ role: "system" as const, content: systemPrompt }] : []),
    ...messages.filter((m) => m.role !== "system")];
  return all.map((m) => `## ${ROLE_TITLE[m.role] ?? m.role}\n\n${m.content}\n`).join("\n");
}

export interface Exported {
  model: string;
  system_prompt: string;
  settings: Record<string, unknown>;
  messages: Msg[];
}

export function conversationJSON(e: Exported): string {
  return JSON.stringify(e, null, 2) + "\n";
}

/** Offer `text` as a file download from the page (no server involved). */
export function download(filename: string, text: string, mime: string): void {
  const url = URL.createObjectURL(new Blob([text], { type: mime }));
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  a.style.display = "none";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
