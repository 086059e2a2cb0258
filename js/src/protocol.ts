// The messages between kernel and page: one envelope, one channel per widget model (the page's end of
// src/webllm_widget/protocol.py). The kinds, the version and each message's fields are generated from the Python
// schema into wire/schema.gen.ts: `send` accepts only the fields the schema gives the page's messages of that kind.
import type { AnyModel } from "@anywidget/types";
import { PAGE_ERROR_CODES, PROTOCOL_VERSION, type ErrorMessage, type Kind, type PageErrorCode, type PageSends } from "./wire/schema.gen";

export { PROTOCOL_VERSION, KINDS, type Kind } from "./wire/schema.gen";

/** Every message: protocol version, kind, and (for requests and their replies) the request id. */
export interface Envelope {
  v: number;
  kind: Kind;
  id?: string;
  [key: string]: unknown;
}

export type Handler = (msg: Envelope, buffers: DataView[]) => void | Promise<void>;

/** An error the page can name: code (one of Python's errors.ERRORS, the page's share) and a sentence to act on. */
export class PageError extends Error {
  code: PageErrorCode;
  detail: Record<string, unknown>;
  constructor(code: PageErrorCode, message: string, detail: Record<string, unknown> = {}) {
    super(message);
    this.code = code;
    this.detail = detail;
  }
}

const PAGE_CODES = new Set<string>(PAGE_ERROR_CODES);
/** Whether `code` is one the page may send (a code from elsewhere, e.g. a DOMException's number, is not). */
export const isPageErrorCode = (code: unknown): code is PageErrorCode => typeof code === "string" && PAGE_CODES.has(code);

/** Turn anything thrown into {code, message}; an error without a page code gets `fallbackCode`. */
export function describeError(err: unknown, fallbackCode: PageErrorCode = "error"): { code: PageErrorCode; message: string } {
  if (err instanceof PageError) return { code: err.code, message: err.message };
  const code = (err as { code?: unknown } | null)?.code;
  if (isPageErrorCode(code) && err instanceof Error) return { code, message: err.message };
  const message = err instanceof Error ? err.message : String(err);
  return { code: fallbackCode, message };
}

/** The `error` message for anything thrown: its page code, message, and detail when it has one. */
export function errorMessage(err: unknown, fallbackCode: PageErrorCode = "error"): ErrorMessage {
  const e = describeError(err, fallbackCode);
  const detail = (err as { detail?: unknown } | null)?.detail;
  const has = detail && typeof detail === "object" && Object.keys(detail).length > 0;
  return { code: e.code, message: e.message, ...(has ? { detail: detail as Record<string, unknown> } : {}) };
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

  /** Send a message of `kind` with `payload` (checked against the schema); `id` names the request it answers. */
  send<K extends keyof PageSends>(kind: K, payload: PageSends[K], buffers: ArrayBufferView[] = [], id?: string): void {
    const msg: Envelope = { ...payload, v: PROTOCOL_VERSION, kind, ...(id !== undefined ? { id } : {}) };
    this.model.send(msg, undefined, buffers);
  }

  /** Reply to request `req`: the reply carries the request's id. */
  reply<K extends keyof PageSends>(req: Envelope | string, kind: K, payload: PageSends[K], buffers: ArrayBufferView[] = []): void {
    this.send(kind, payload, buffers, typeof req === "string" ? req : req.id);
  }

  replyError(req: Envelope | string | undefined, err: unknown, fallbackCode: PageErrorCode = "error"): void {
    this.send("error", errorMessage(err, fallbackCode), [], typeof req === "string" ? req : req?.id);
  }

  /** Tell the kernel the page listens; `info` describes the page (e.g. the WebGPU adapter). */
  ready(info: PageSends["ready"]): void {
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
