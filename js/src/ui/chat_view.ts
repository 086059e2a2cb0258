// The chat view: message list (sanitized markdown), input with send/stop, model picker, load progress,
// live tokens per second, the GPU in use and errors. Knows nothing about anywidget: it renders a ViewState
// and calls ViewActions; chat_widget.ts connects both to the widget model.
import { renderMarkdown } from "./markdown";
import { CSS } from "./style";

export interface Msg {
  role: "system" | "user" | "assistant";
  content: string;
}

export interface ViewProgress {
  progress: number;
  phase: string;
  bytes_done?: number;
  bytes_total?: number;
  eta_s?: number;
  elapsed_s?: number;
  text?: string;
}

export interface ViewState {
  status: string;
  model: string;
  models: { id: string; label?: string }[];
  progress: ViewProgress | null;
  messages: Msg[];
  pending: Msg[];
  live: { tokens: number; tok_s: number } | null;
  stats: Record<string, number | string | null> | null;
  gpu: string;
  /** Requested device: "auto" | "webgpu" | "cpu" (helper F). */
  device?: string;
  error: { code: string; message: string } | null;
  /** A line about the page's models (this chat's model unloaded to make room for another, or loaded again). */
  notice?: string | null;
}

export interface ViewActions {
  send(text: string): void;
  stop(): void;
  pickModel(id: string): void;
  pickDevice?(device: string): void;
  reset(): void;
}

function h<K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

export function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(2)} GB`;
}

function fmtSecs(s: number): string {
  if (s < 60) return `${Math.ceil(s)} s`;
  return `${Math.floor(s / 60)} min ${Math.ceil(s % 60)} s`;
}

const PHASES: Record<string, string> = {
  install: "Copying the model into this page",
  fetch: "Downloading the model",
  load: "Loading weights onto the GPU",
  compile: "Compiling GPU shaders",
  done: "Ready",
};

export class ChatView {
  readonly root: HTMLDivElement;
  private picker = h("select", "wlw-model");
  private devicePicker = h("select", "wlw-device");
  private statusEl = h("span", "wlw-status");
  private gpuEl = h("span", "wlw-gpu-name");
  private progressBox = h("div", "wlw-progress");
  private bar = h("progress");
  private progressText = h("div", "wlw-progress-text");
  private list = h("div", "wlw-messages");
  private errorEl = h("div", "wlw-error");
  private noticeEl = h("div", "wlw-notice");
  private input = h("textarea", "wlw-input");
  private sendBtn = h("button", "wlw-send", "Send");
  private stopBtn = h("button", "wlw-stop", "Stop");
  private resetBtn = h("button", "wlw-reset", "Clear");
  private statsEl = h("div", "wlw-stats");
  private rendered: { role: string; content: string; node: HTMLElement }[] = [];
  private state: ViewState | null = null;

  constructor(parent: HTMLElement, private actions: ViewActions) {
    const style = h("style");
    style.textContent = CSS;
    this.root = h("div", "wlw-chat");
    const head = h("div", "wlw-head");
    const title = h("span", "wlw-title", "Chat");
    this.picker.title = "Model";
    this.picker.addEventListener("change", () => this.actions.pickModel(this.picker.value));
    this.devicePicker.title = "Where the model runs";
    for (const [v, label] of [["auto", "Auto"], ["webgpu", "WebGPU"], ["cpu", "CPU"]]) {
      const o = h("option", undefined, label);
      o.value = v;
      this.devicePicker.append(o);
    }
    this.devicePicker.addEventListener("change", () => this.actions.pickDevice?.(this.devicePicker.value));
    head.append(title, this.picker, this.devicePicker, this.statusEl, this.gpuEl);
    this.bar.max = 1;
    this.progressBox.append(this.bar, this.progressText);
    this.list.setAttribute("role", "log");
    this.list.setAttribute("aria-live", "polite");
    this.errorEl.setAttribute("role", "alert");
    this.input.rows = 2;
    this.input.placeholder = "Ask something… (Enter sends, Shift+Enter for a new line)";
    this.input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        this.submit();
      }
      ev.stopPropagation(); // keep JupyterLab's notebook shortcuts out of the text box
    });
    this.sendBtn.addEventListener("click", () => this.submit());
    this.stopBtn.addEventListener("click", () => this.actions.stop());
    this.resetBtn.addEventListener("click", () => this.actions.reset());
    this.resetBtn.title = "Clear the conversation";
    const row = h("div", "wlw-input-row");
    row.append(this.input, this.sendBtn, this.stopBtn, this.resetBtn);
    this.noticeEl.setAttribute("role", "status");
    this.root.append(head, this.progressBox, this.noticeEl, this.list, this.errorEl, row, this.statsEl);
    parent.append(style, this.root);
  }

  private submit() {
    const text = this.input.value.trim();
    if (!text || !this.state || this.state.status !== "ready") return;
    this.input.value = "";
    this.actions.send(text);
  }

  update(s: ViewState): void {
    this.state = s;
    // model picker
    const ids = s.models.map((m) => m.id);
    if (s.model && !ids.includes(s.model)) ids.unshift(s.model);
    const current = [...this.picker.options].map((o) => o.value).join("\n");
    if (current !== ids.join("\n")) {
      this.picker.replaceChildren(
        ...ids.map((id) => {
          const o = h("option", undefined, s.models.find((m) => m.id === id)?.label ?? id);
          o.value = id;
          return o;
        }),
      );
    }
    this.picker.value = s.model;
    this.picker.disabled = s.status === "loading" || s.status === "generating";
    this.devicePicker.value = s.device ?? "auto";
    this.devicePicker.disabled = this.picker.disabled;
    this.statusEl.textContent = s.status;
    this.statusEl.dataset.status = s.status;
    this.gpuEl.textContent = s.gpu ? (s.gpu.startsWith("CPU") ? s.gpu : `GPU: ${s.gpu}`) : "";

    // progress
    const p = s.progress;
    const showProgress = (s.status === "loading" || s.status === "swapping") && p !== null;
    this.progressBox.hidden = !showProgress;
    if (showProgress && p) {
      this.bar.value = Math.max(0, Math.min(1, p.progress || 0));
      const parts = [(s.status === "swapping" ? "Swapping models: " : "") + (PHASES[p.phase] ?? p.phase)];
      if (p.bytes_total) parts.push(`${fmtBytes(p.bytes_done ?? 0)} of ${fmtBytes(p.bytes_total)}`);
      parts.push(`${Math.floor((p.progress || 0) * 100)}%`);
      if (p.eta_s !== undefined && p.eta_s !== null && isFinite(p.eta_s)) parts.push(`about ${fmtSecs(p.eta_s)} left`);
      this.progressText.textContent = parts.join(" · ");
    }

    // messages: re-render only what changed (the streaming answer changes on every token)
    const all = [...s.messages.filter((m) => m.role !== "system"), ...s.pending];
    for (let i = 0; i < all.length; i++) {
      const m = all[i];
      const r = this.rendered[i];
      if (r && r.role === m.role && r.content === m.content) continue;
      const node = h("div", `wlw-msg wlw-${m.role}`);
      node.dataset.role = m.role;
      const body = h("div", "wlw-body");
      body.append(renderMarkdown(m.content));
      node.append(body);
      if (r) r.node.replaceWith(node);
      else this.list.append(node);
      this.rendered[i] = { role: m.role, content: m.content, node };
    }
    for (const r of this.rendered.splice(all.length)) r.node.remove();
    this.list.scrollTop = this.list.scrollHeight;

    this.noticeEl.hidden = !s.notice;
    this.noticeEl.textContent = s.notice ?? "";

    // error where the user looks: just above the input
    this.errorEl.hidden = !s.error;
    this.errorEl.textContent = s.error ? `[${s.error.code}] ${s.error.message}` : "";

    const busy = s.status === "generating";
    this.sendBtn.disabled = s.status !== "ready";
    this.input.disabled = s.status === "loading" || s.status === "swapping";
    this.stopBtn.disabled = !busy;
    this.resetBtn.disabled = busy || s.status === "loading";

    // live speed while generating; the last answer's numbers after
    if (busy && s.live) {
      this.statsEl.textContent = `generating · ${s.live.tokens} tokens · ${s.live.tok_s.toFixed(2)} tok/s`;
    } else if (s.stats && s.stats.decode_tokens_per_s !== undefined) {
      const st = s.stats;
      const n = (k: string) => Number(st[k] ?? 0);
      this.statsEl.textContent =
        `prefill ${n("prompt_tokens")} tokens at ${n("prefill_tokens_per_s").toFixed(1)} tok/s · ` +
        `decode ${n("completion_tokens")} tokens at ${n("decode_tokens_per_s").toFixed(2)} tok/s`;
    } else {
      this.statsEl.textContent = "";
    }
  }
}
