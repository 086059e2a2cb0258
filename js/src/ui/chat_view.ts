// The chat view: message list (sanitized markdown) with copy / edit / regenerate on each turn, input with
// send/stop/clear, generation settings (collapsed), export, model and device pickers, load progress, live
// tokens per second, the GPU in use and errors. Colours come from JupyterLab's theme variables (with fallbacks
// outside JupyterLab). Knows nothing about anywidget: it renders a ViewState and calls ViewActions;
// chat_widget.ts connects both to the widget model.
import { copyText, renderMarkdown } from "./markdown";
import { conversationJSON, conversationMarkdown, download } from "./export";
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

/** A model picker entry; the optional facts are shown beside its name. */
export interface ModelEntry {
  id: string;
  label?: string;
  /** Bytes to download or copy into the page. */
  size_bytes?: number | null;
  /** GPU memory the model needs, MB. */
  vram_MB?: number | null;
  /** Already in this browser's Cache Storage. */
  cached?: boolean | null;
  /** Whether this page's adapter can run it (null: unknown), and why (or where it runs). */
  fits?: boolean | null;
  why?: string;
  /** Where it would run here: "webgpu" or "cpu". */
  device?: string;
  /** What `size_bytes` counts ("weights"), or why it is unknown. */
  size_note?: string;
}

/** The generation settings the view edits (null: the model's default). */
export interface ViewSettings {
  system_prompt: string;
  temperature: number | null;
  top_p: number | null;
  max_tokens: number | null;
  seed: number | null;
}

/** A model cached in this browser, as the Storage panel lists it (engine/model_cache.ts). */
export interface CachedEntry {
  id: string;
  url: string;
  kind: string;
  bytes: number;
  files: number;
}

/** The Storage panel: cached models, the origin's estimate, whether it is persistent. */
export interface StorageView {
  models: CachedEntry[];
  usage: number | null;
  quota: number | null;
  persisted: boolean | null;
  busy?: boolean;
  message?: string;
}

export interface ViewState {
  status: string;
  model: string;
  models: ModelEntry[];
  progress: ViewProgress | null;
  messages: Msg[];
  /** Index in `messages` the pending turn replaces from (regenerate / edit); messages.length otherwise. */
  base?: number;
  pending: Msg[];
  live: { tokens: number; tok_s: number } | null;
  stats: Record<string, number | string | null> | null;
  gpu: string;
  /** Requested device: "auto" | "webgpu" | "cpu". */
  device?: string;
  settings: ViewSettings;
  /** A batch from Python: prompts answered so far of the total. */
  batch?: { done: number; total: number } | null;
  error: { code: string; message: string } | null;
  /** A line about the page's models (this chat's model unloaded to make room for another, or loaded again). */
  notice?: string | null;
  /** The Storage panel's content (null until it is opened). */
  storage?: StorageView | null;
}

export interface ViewActions {
  send(text: string): void;
  stop(): void;
  pickModel(id: string): void;
  pickDevice?(device: string): void;
  reset(): void;
  setSetting(name: keyof ViewSettings, value: string | number | null): void;
  /** Answer the last user message again (the last answer is dropped). */
  regenerate(): void;
  /** Replace user message `index` with `text` and answer it (the conversation after it is dropped). */
  edit(index: number, text: string): void;
  /** The model picker got focus (about to be opened): a chance to look up what it does not know yet. */
  pickerOpened?(): void;
  /** The Storage panel was opened: list what is cached. */
  storageOpened?(): void;
  /** Delete a cached model (its base URL), or everything ("all"). */
  deleteCached?(target: string): void;
  /** Ask the browser to keep this page's storage (navigator.storage.persist()). */
  persist?(): void;
}

function h<K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function button(cls: string, text: string, label: string): HTMLButtonElement {
  const b = h("button", cls, text);
  b.type = "button";
  b.title = label;
  b.setAttribute("aria-label", label);
  return b;
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

/** The text of a picker entry: its name, then size, memory, cached, fit. */
export function modelEntryText(m: ModelEntry): string {
  const parts = [m.label ?? m.id];
  if (m.size_bytes) parts.push(m.size_note === "weights" ? `${fmtBytes(m.size_bytes)} weights` : fmtBytes(m.size_bytes));
  if (m.vram_MB) parts.push(`needs ${fmtBytes(m.vram_MB * 1024 * 1024)} ${m.device === "cpu" ? "memory" : "GPU memory"}`);
  if (m.cached === true) parts.push("cached");
  else if (m.cached === false) parts.push("not cached");
  if (m.fits === false) parts.push(`won't run here${m.why ? `: ${m.why}` : ""}`);
  else if (m.fits === true) parts.push(m.device === "cpu" ? "runs here on the CPU" : "runs here on WebGPU");
  return parts.join(" · ");
}

const PHASES: Record<string, string> = {
  install: "Copying the model into this page",
  fetch: "Downloading the model",
  load: "Loading weights onto the GPU",
  compile: "Compiling GPU shaders",
  done: "Ready",
};

/** The settings form's fields: [name, label, input attributes]. */
const NUMERIC: [keyof ViewSettings, string, Record<string, string>][] = [
  ["temperature", "Temperature", { min: "0", max: "2", step: "0.05", placeholder: "model default" }],
  ["top_p", "Top-p", { min: "0", max: "1", step: "0.05", placeholder: "model default" }],
  ["max_tokens", "Max tokens", { min: "1", step: "1", placeholder: "no limit" }],
  ["seed", "Seed", { step: "1", placeholder: "random" }],
];

interface Turn {
  index: number;
  role: string;
  content: string;
  node: HTMLElement;
  actions: HTMLElement;
}

export class ChatView {
  readonly root: HTMLDivElement;
  private picker = h("select", "wlw-model");
  private devicePicker = h("select", "wlw-device");
  private statusEl = h("span", "wlw-status");
  private gpuEl = h("span", "wlw-gpu-name");
  private progressBox = h("div", "wlw-progress");
  private bar = h("progress");
  private progressText = h("div", "wlw-progress-text");
  private batchBox = h("div", "wlw-batch");
  private batchBar = h("progress");
  private batchText = h("span", "wlw-batch-text");
  private list = h("div", "wlw-messages");
  private errorEl = h("div", "wlw-error");
  private noticeEl = h("div", "wlw-notice");
  private settingsBox = h("details", "wlw-settings");
  private storageBox = h("details", "wlw-storage");
  private storageBody = h("div", "wlw-storage-body");
  private storageShown = "";
  private settingsInputs = new Map<keyof ViewSettings, HTMLInputElement | HTMLTextAreaElement>();
  private input = h("textarea", "wlw-input");
  private sendBtn = button("wlw-send", "Send", "Send (Enter)");
  private stopBtn = button("wlw-stop", "Stop", "Stop the answer (Esc)");
  private resetBtn = button("wlw-reset", "Clear", "Clear the conversation");
  private exportMdBtn = button("wlw-export-md", "Export .md", "Download the conversation as Markdown");
  private exportJsonBtn = button("wlw-export-json", "Export .json", "Download the conversation as JSON");
  private statsEl = h("div", "wlw-stats");
  private rendered: Turn[] = [];
  private editing: number | null = null;
  private state: ViewState | null = null;

  constructor(parent: HTMLElement, private actions: ViewActions) {
    const style = h("style");
    style.textContent = CSS;
    this.root = h("div", "wlw-chat");
    this.root.setAttribute("role", "region");
    this.root.setAttribute("aria-label", "Chat with a language model");
    const head = h("div", "wlw-head");
    const title = h("span", "wlw-title", "Chat");
    this.picker.title = "Model";
    this.picker.setAttribute("aria-label", "Model");
    this.picker.addEventListener("change", () => this.actions.pickModel(this.picker.value));
    for (const ev of ["focus", "pointerdown"]) this.picker.addEventListener(ev, () => this.actions.pickerOpened?.());
    this.devicePicker.title = "Where the model runs";
    this.devicePicker.setAttribute("aria-label", "Device");
    for (const [v, label] of [["auto", "Auto"], ["webgpu", "WebGPU"], ["cpu", "CPU"]]) {
      const o = h("option", undefined, label);
      o.value = v;
      this.devicePicker.append(o);
    }
    this.devicePicker.addEventListener("change", () => this.actions.pickDevice?.(this.devicePicker.value));
    this.statusEl.setAttribute("role", "status");
    head.append(title, this.picker, this.devicePicker, this.statusEl, this.gpuEl);
    this.bar.max = 1;
    this.bar.setAttribute("aria-label", "Model load progress");
    this.progressBox.append(this.bar, this.progressText);
    this.batchBar.max = 1;
    this.batchBar.setAttribute("aria-label", "Batch progress");
    this.batchBox.append(this.batchBar, this.batchText);
    this.batchBox.hidden = true;
    this.list.setAttribute("role", "log");
    this.list.setAttribute("aria-live", "polite");
    this.list.setAttribute("aria-label", "Conversation");
    this.errorEl.setAttribute("role", "alert");

    // Settings, collapsed. The form is built when first opened, so a closed widget has one text box.
    const summary = h("summary", undefined, "Settings");
    summary.setAttribute("aria-label", "Generation settings: system prompt, temperature, top-p, max tokens, seed");
    this.settingsBox.append(summary);
    this.settingsBox.addEventListener("toggle", () => {
      if (this.settingsBox.open && !this.settingsInputs.size) this.buildSettings();
    });

    // Storage, collapsed: what this browser keeps for the page, listed when opened.
    const storageSummary = h("summary", undefined, "Storage");
    storageSummary.setAttribute("aria-label", "Models cached in this browser: sizes, delete, storage quota");
    this.storageBox.append(storageSummary, this.storageBody);
    this.storageBox.addEventListener("toggle", () => {
      if (this.storageBox.open) this.actions.storageOpened?.();
    });

    this.input.rows = 2;
    this.input.placeholder = "Ask something… (Enter sends, Shift+Enter for a new line, Esc stops)";
    this.input.setAttribute("aria-label", "Message");
    this.input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        this.submit();
      }
    });
    // Esc stops an answer from anywhere in the widget; keys typed here stay out of JupyterLab's shortcuts.
    this.root.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && this.state?.status === "generating") {
        ev.preventDefault();
        this.actions.stop();
      }
      ev.stopPropagation();
    });
    this.sendBtn.addEventListener("click", () => this.submit());
    this.stopBtn.addEventListener("click", () => this.actions.stop());
    this.resetBtn.addEventListener("click", () => this.actions.reset());
    this.exportMdBtn.addEventListener("click", () => this.exportAs("md"));
    this.exportJsonBtn.addEventListener("click", () => this.exportAs("json"));
    const row = h("div", "wlw-input-row");
    row.append(this.input, this.sendBtn, this.stopBtn, this.resetBtn);
    this.noticeEl.setAttribute("role", "status");
    const foot = h("div", "wlw-foot");
    foot.append(this.statsEl, this.exportMdBtn, this.exportJsonBtn);
    this.root.append(head, this.progressBox, this.noticeEl, this.batchBox, this.list, this.errorEl, this.settingsBox, this.storageBox, row, foot);
    parent.append(style, this.root);
  }

  private buildSettings() {
    const form = h("div", "wlw-settings-form");
    const sys = h("textarea", "wlw-set-system_prompt");
    sys.rows = 2;
    sys.placeholder = "System prompt (sent before the conversation)";
    sys.setAttribute("aria-label", "System prompt");
    sys.addEventListener("change", () => this.actions.setSetting("system_prompt", sys.value));
    const sysLabel = h("label", "wlw-field wlw-field-wide", "System prompt");
    sysLabel.append(sys);
    form.append(sysLabel);
    this.settingsInputs.set("system_prompt", sys);
    for (const [name, text, attrs] of NUMERIC) {
      const inp = h("input", `wlw-set-${name}`);
      inp.type = "number";
      for (const [k, v] of Object.entries(attrs)) inp.setAttribute(k, v);
      inp.setAttribute("aria-label", text);
      inp.addEventListener("change", () => {
        const v = inp.value.trim() === "" ? null : Number(inp.value);
        this.actions.setSetting(name, v === null || !isFinite(v) ? null : v);
      });
      const label = h("label", "wlw-field", text);
      label.append(inp);
      form.append(label);
      this.settingsInputs.set(name, inp);
    }
    this.settingsBox.append(form);
    if (this.state) this.showSettings(this.state.settings);
  }

  private showSettings(s: ViewSettings) {
    for (const [name, inp] of this.settingsInputs) {
      if (document.activeElement === inp) continue; // do not overwrite what is being typed
      const v = s[name];
      inp.value = v === null || v === undefined ? "" : String(v);
    }
  }

  private showStorage(st: StorageView) {
    const key = JSON.stringify(st);
    if (key === this.storageShown) return;
    this.storageShown = key;
    const usage = h("div", "wlw-storage-usage");
    usage.setAttribute("role", "status");
    const used = st.usage !== null ? `${fmtBytes(st.usage)} used` : "usage unknown";
    usage.textContent = `${used}${st.quota ? ` of ${fmtBytes(st.quota)} this browser allows` : ""} · ` +
      (st.persisted === true ? "kept (persistent)" : st.persisted === false ? "may be evicted under storage pressure" : "persistence unknown");
    const persist = button("wlw-persist", "Keep", "Ask the browser to keep these models (persistent storage)");
    persist.disabled = st.persisted === true || !!st.busy;
    persist.addEventListener("click", () => this.actions.persist?.());
    const clear = button("wlw-cache-clear", "Delete all", "Delete every cached model and the engine bundle");
    clear.disabled = !st.models.length || !!st.busy;
    clear.addEventListener("click", () => this.actions.deleteCached?.("all"));
    const top = h("div", "wlw-storage-top");
    top.append(usage, persist, clear);
    const list = h("ul", "wlw-cache-list");
    list.setAttribute("aria-label", "Cached models");
    for (const m of st.models) {
      const li = h("li", "wlw-cache-row");
      li.dataset.url = m.url;
      const name = h("span", "wlw-cache-name", m.id);
      name.title = m.url;
      const size = h("span", "wlw-cache-size", `${fmtBytes(m.bytes)} · ${m.files} file${m.files === 1 ? "" : "s"}`);
      const del = button("wlw-cache-delete", "Delete", `Delete ${m.id} from this browser's cache`);
      del.disabled = !!st.busy;
      del.addEventListener("click", () => this.actions.deleteCached?.(m.url));
      li.append(name, size, del);
      list.append(li);
    }
    if (!st.models.length) list.append(h("li", "wlw-cache-empty", "Nothing cached."));
    const parts: HTMLElement[] = [top, list];
    if (st.message) parts.push(h("div", "wlw-storage-message", st.message));
    this.storageBody.replaceChildren(...parts);
  }

  private submit() {
    const text = this.input.value.trim();
    if (!text || !this.state || this.state.status !== "ready") return;
    this.input.value = "";
    this.actions.send(text);
  }

  private exportAs(fmt: "md" | "json") {
    const s = this.state;
    if (!s) return;
    const messages = s.messages.filter((m) => m.role !== "system");
    if (fmt === "md") {
      download("conversation.md", conversationMarkdown(messages, s.settings.system_prompt), "text/markdown");
    } else {
      const { system_prompt, ...settings } = s.settings;
      download("conversation.json", conversationJSON({ model: s.model, system_prompt, settings, messages }), "application/json");
    }
  }

  private startEdit(t: Turn) {
    if (this.state?.status !== "ready") return;
    this.editing = t.index;
    const body = t.node.querySelector(".wlw-body") as HTMLElement;
    const box = h("textarea", "wlw-edit-input");
    box.value = t.content;
    box.rows = Math.min(8, Math.max(2, t.content.split("\n").length));
    box.setAttribute("aria-label", "Edit this message");
    const save = button("wlw-edit-send", "Send", "Send the edited message (the conversation after it is dropped)");
    const cancel = button("wlw-edit-cancel", "Cancel", "Keep the message as it was (Esc)");
    const finish = (text: string | null) => {
      this.editing = null;
      const r = this.rendered.find((x) => x.index === t.index);
      if (r) r.content = "\u0000"; // re-render it on the next update
      if (text !== null && text.trim()) this.actions.edit(t.index, text.trim());
      else if (this.state) this.update(this.state);
    };
    box.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        finish(box.value);
      } else if (ev.key === "Escape") {
        ev.preventDefault();
        ev.stopPropagation();
        finish(null);
      }
    });
    save.addEventListener("click", () => finish(box.value));
    cancel.addEventListener("click", () => finish(null));
    const edit = h("div", "wlw-edit");
    edit.append(box, save, cancel);
    body.replaceChildren(edit);
    box.focus();
  }

  private turnNode(index: number, m: Msg, pending: boolean): Turn {
    const turn = h("div", `wlw-turn wlw-turn-${m.role}`);
    const node = h("div", `wlw-msg wlw-${m.role}`);
    node.dataset.role = m.role;
    const body = h("div", "wlw-body");
    body.append(renderMarkdown(m.content));
    node.append(body);
    const actions = h("div", "wlw-msg-actions");
    const t: Turn = { index, role: m.role, content: m.content, node: turn, actions };
    if (!pending) {
      const copy = button("wlw-copy", "Copy", `Copy this ${m.role === "user" ? "message" : "answer"}`);
      copy.addEventListener("click", () => void copyText(m.content, copy));
      actions.append(copy);
      if (m.role === "user") {
        const edit = button("wlw-edit-btn", "Edit", "Edit this message and answer it again");
        edit.addEventListener("click", () => this.startEdit(t));
        actions.append(edit);
      } else if (m.role === "assistant") {
        const regen = button("wlw-regenerate", "Regenerate", "Answer the last message again");
        regen.addEventListener("click", () => this.actions.regenerate());
        actions.append(regen);
      }
    }
    turn.append(node, actions);
    return t;
  }

  update(s: ViewState): void {
    this.state = s;
    // model picker
    const entries = [...s.models];
    if (s.model && !entries.some((m) => m.id === s.model)) entries.unshift({ id: s.model });
    const texts = entries.map((m) => `${m.id}\t${modelEntryText(m)}`).join("\n");
    if (this.picker.dataset.entries !== texts) {
      this.picker.dataset.entries = texts;
      this.picker.replaceChildren(
        ...entries.map((m) => {
          const o = h("option", undefined, modelEntryText(m));
          o.value = m.id;
          if (m.fits !== undefined && m.fits !== null) o.dataset.fits = m.fits ? "yes" : "no";
          if (m.cached !== undefined && m.cached !== null) o.dataset.cached = m.cached ? "yes" : "no";
          if (m.size_bytes) o.dataset.size = String(m.size_bytes);
          if (m.vram_MB) o.dataset.vramMb = m.vram_MB.toFixed(2);
          if (m.device) o.dataset.device = m.device;
          if (m.why) o.title = m.why;
          return o;
        }),
      );
    }
    this.picker.value = s.model;
    const busy = s.status === "generating";
    this.picker.disabled = s.status === "loading" || busy;
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
    const b = s.batch;
    this.batchBox.hidden = !b;
    if (b) {
      this.batchBar.value = b.total ? b.done / b.total : 0;
      this.batchText.textContent = `batch: ${b.done} of ${b.total} prompts answered`;
    }

    // messages: re-render only what changed (the streaming answer changes on every token)
    const base = Math.min(s.base ?? s.messages.length, s.messages.length);
    const shown: [number, Msg, boolean][] = [];
    s.messages.slice(0, base).forEach((m, i) => m.role !== "system" && shown.push([i, m, false]));
    s.pending.forEach((m, k) => shown.push([base + k, m, true]));
    for (let i = 0; i < shown.length; i++) {
      const [index, m, pending] = shown[i];
      const r = this.rendered[i];
      if (r && r.index === this.editing && index === this.editing) continue;
      if (r && r.role === m.role && r.content === m.content && r.index === index
        && (r.actions.childElementCount === 0) === pending) continue;
      const t = this.turnNode(index, m, pending);
      if (r) r.node.replaceWith(t.node);
      else this.list.append(t.node);
      this.rendered[i] = t;
    }
    for (const r of this.rendered.splice(shown.length)) r.node.remove();
    if (this.editing !== null && !this.rendered.some((r) => r.index === this.editing)) this.editing = null;
    // what each turn offers now: edit any user message and regenerate the last answer, while idle
    const lastAssistant = [...this.rendered].reverse().find((r) => r.role === "assistant");
    for (const r of this.rendered) {
      for (const btn of r.actions.querySelectorAll<HTMLButtonElement>(".wlw-edit-btn, .wlw-regenerate")) {
        btn.disabled = s.status !== "ready";
        if (btn.classList.contains("wlw-regenerate")) btn.hidden = r !== lastAssistant;
      }
    }
    if (this.editing === null) this.list.scrollTop = this.list.scrollHeight;

    this.noticeEl.hidden = !s.notice;
    this.noticeEl.textContent = s.notice ?? "";

    // error where the user looks: just above the input
    this.errorEl.hidden = !s.error;
    this.errorEl.textContent = s.error ? `[${s.error.code}] ${s.error.message}` : "";

    if (this.settingsInputs.size) this.showSettings(s.settings);
    if (s.storage) this.showStorage(s.storage);
    this.sendBtn.disabled = s.status !== "ready";
    this.input.disabled = s.status === "loading" || s.status === "swapping";
    this.stopBtn.disabled = !busy;
    this.resetBtn.disabled = busy || s.status === "loading";
    this.exportMdBtn.disabled = this.exportJsonBtn.disabled = !s.messages.length;

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
