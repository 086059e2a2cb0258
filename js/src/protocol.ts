// The messages between kernel and page: one list of kinds, one envelope, one channel per widget model.
// Mirrors src/webllm_widget/protocol.py; bump PROTOCOL_VERSION on both sides together.
import type { AnyModel } from "@anywidget/types";

export const PROTOCOL_VERSION = 1;

export const KINDS = [
  "ready", // page -> kernel: handlers listen; payload describes the page (adapter, ...)
  "load", // kernel -> page: load something made of blobs (runtime, library, model)
  "progress", // page -> kernel: how far a request got
  "ask", // kernel -> page: a prompt (chat)
  "token", // page -> kernel: streamed text of an answer
  "done", // page -> kernel: a request finished
  "stop", // kernel -> page: stop a running request
  "error", // either way: a request failed (code + message); without an id, a notice to show
  "need-blob", // page -> kernel: send me this blob (by sha256)
  "blob", // kernel -> page: one chunk of a blob (one binary buffer)
  "ack", // page -> kernel: chunks received so far (flow control)
  "stats", // page -> kernel: numbers about the engine or a run
  "call", // kernel -> page: run a function (GPU widget)
  "result", // page -> kernel: the outputs of a call or load
  "profile", // kernel -> page: run a model library's steps and time its kernels (GPU widget)
] as const;
export type Kind = (typeof KINDS)[number];

/** Every message: protocol version, kind, and (for requests and their replies) the request id. */
export interface Envelope {
  v: number;
  kind: Kind;
  id?: string;
  [key: string]: unknown;
}

export type Handler = (msg: Envelope, buffers: DataView[]) => void | Promise<void>;

/** An error the page can name: code (stable, shared with Python's errors.py) and a sentence to act on. */
export class PageError extends Error {
  code: string;
  detail: Record<string, unknown>;
  constructor(code: string, message: string, detail: Record<string, unknown> = {}) {
    super(message);
    this.code = code;
    this.detail = detail;
  }
}

/** Turn anything thrown into {code, message}. */
export function describeError(err: unknown, fallbackCode = "error"): { code: string; message: string } {
  if (err instanceof PageError) return { code: err.code, message: err.message };
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === "string" && err instanceof Error) return { code, message: err.message };
  const message = err instanceof Error ? err.message : String(err);
  return { code: fallbackCode, message };
}

let counter = 0;
/** A request id unique on this page. */
export function newId(prefix = "p"): string {
  counter += 1;
  return `${prefix}${Date.now().toString(36)}-${counter}`;
}

/**
 * The page end of a widget's channel. Create it in anywidget's `initialize({model})` so its
 * `msg:custom` listener exists before the kernel's first message; call `ready()` when every
 * handler is registered.
 */
export class PageChannel {
  readonly model: AnyModel;
  private handlers = new Map<string, Handler[]>();
  private listener: (msg: unknown, buffers: DataView[]) => void;

  constructor(model: AnyModel) {
    this.model = model;
    this.listener = (msg, buffers) => this.dispatch(msg, buffers ?? []);
    model.on("msg:custom", this.listener);
  }

  /** Handle every message of `kind`. Returns a function that removes the handler. */
  on(kind: Kind, handler: Handler): () => void {
    const list = this.handlers.get(kind) ?? [];
    list.push(handler);
    this.handlers.set(kind, list);
    return () => {
      const l = this.handlers.get(kind) ?? [];
      this.handlers.set(kind, l.filter((h) => h !== handler));
    };
  }

  send(kind: Kind, payload: Record<string, unknown> = {}, buffers: ArrayBufferView[] = []): void {
    const msg: Envelope = { ...payload, v: PROTOCOL_VERSION, kind };
    this.model.send(msg, undefined, buffers);
  }

  /** Reply to request `req`: the reply carries the request's id. */
  reply(req: Envelope | string, kind: Kind, payload: Record<string, unknown> = {}, buffers: ArrayBufferView[] = []): void {
    const id = typeof req === "string" ? req : req.id;
    this.send(kind, { ...payload, id }, buffers);
  }

  replyError(req: Envelope | string | undefined, err: unknown, fallbackCode = "error"): void {
    const e = describeError(err, fallbackCode);
    const detail = err instanceof PageError ? err.detail : {};
    const id = typeof req === "string" ? req : req?.id;
    this.send("error", { ...detail, id, code: e.code, message: e.message });
  }

  /** Tell the kernel the page listens; `info` travels with it (e.g. the WebGPU adapter). */
  ready(info: Record<string, unknown> = {}): void {
    this.send("ready", info);
  }

  close(): void {
    this.model.off("msg:custom", this.listener);
    this.handlers.clear();
  }

  private dispatch(raw: unknown, buffers: DataView[]): void {
    if (!raw || typeof raw !== "object" || !("kind" in raw)) return; // not ours
    const msg = raw as Envelope;
    if (msg.v !== PROTOCOL_VERSION) {
      this.replyError(msg, new PageError(
        "protocol-mismatch",
        `The page speaks protocol v${PROTOCOL_VERSION} but the kernel sent v${msg.v}: ` +
          "restart the kernel and reload the page so both use the same webllm-widget version.",
      ));
      return;
    }
    const list = this.handlers.get(msg.kind) ?? [];
    for (const h of list) {
      Promise.resolve()
        .then(() => h(msg, buffers))
        .catch((err) => this.replyError(msg, err));
    }
  }
}
