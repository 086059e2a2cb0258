// Content-addressed blobs on the page: Cache Storage first, else fetched from the Jupyter server's
// webllm-widget route when it has one (several times faster than the comm), else from the kernel in chunks over
// the comm. Every blob is verified by sha256 before it is used; a copy whose hash turns out wrong is evicted
// before the error is reported. Comm chunks are streamed into Cache Storage while they arrive; bundles are
// imported once from a Blob URL. Hashing is WebCrypto's one-shot digest once all bytes are there, not an
// incremental wasm sha256 while they stream: the one-shot digest is two to three times faster, and the page's
// CPU is what limits the comm on a busy machine (figures in docs/toolchain-notes.md; bench/channel.py measures
// the transports).
import { fromSiblings, serveSiblings } from "./siblings";
import { PageChannel, PageError, Envelope, isPageErrorCode, newId } from "./protocol";
import type { BlobChunk, BlobRef, ErrorMessage, NeedBlob } from "./wire/schema.gen";

/** What the kernel offers: enough to look the blob up and to check it. */
export type { BlobRef };

export type ProgressFn = (ref: BlobRef, received: number, fromCache: boolean) => void;

/** How blobs missing from Cache Storage travel: "auto" = the HTTP route when the server has one, else the comm. */
export type Transport = "auto" | "comm" | "http";

/** The Jupyter server this page was served by: where its routes start and how to authenticate. */
export interface HttpRoute {
  base: string; // absolute, ends with "/"
  headers: Record<string, string>;
}

/** Bytes this page got, by where they came from (all widgets together); read by tests and benchmarks. */
export interface BlobStats {
  comm: number;
  http: number;
  cache: number;
  http_failures: number;
  /** Bytes another output frame of this page gave (siblings.ts). */
  siblings?: number;
  /** Where the time of the latest transfer went (ms): what limits a transport. */
  last?: { via: "comm" | "http"; receive_ms: number; verify_ms: number; store_ms: number; bytes: number;
          /** comm: time in our chunk handler (copy, cache enqueue, ack) of the whole receive. */
          handler_ms?: number };
}

export const CACHE_NAME = "webllm-widget/blobs";
/** Cache Storage keys are URLs; a synthetic one names the content, not a place. */
export const blobUrl = (sha256: string) => `https://webllm-widget.invalid/blobs/${sha256}`;
/** Page acks every ACK_EVERY chunks; the kernel keeps at most its window outstanding. */
export const ACK_EVERY = 8;

// Shared by every widget on the page: a transfer in flight is shared, a bundle is imported once.
interface PageState {
  bytes: Map<string, Promise<Uint8Array>>; // in flight only
  modules: Map<string, Promise<unknown>>;
  route?: Promise<HttpRoute | null>; // probed once per page
  stats: BlobStats;
}
const STATE_KEY = "__webllmWidgetBlobs";
function pageState(): PageState {
  const g = globalThis as unknown as Record<string, PageState>;
  if (!g[STATE_KEY]) g[STATE_KEY] = { bytes: new Map(), modules: new Map(), stats: { comm: 0, http: 0, cache: 0, http_failures: 0 } };
  return g[STATE_KEY];
}

export function blobStats(): BlobStats {
  return { ...pageState().stats };
}

/**
 * JupyterLab and Notebook 7 put their configuration in the page (`#jupyter-config-data`: base URL, token).
 * Other hosts (VS Code, Colab, marimo, a plain test page) have none: there the comm is the only way.
 */
export function jupyterServer(): HttpRoute | null {
  if (typeof document === "undefined") return null;
  const el = document.getElementById("jupyter-config-data");
  if (!el?.textContent) return null;
  try {
    const cfg = JSON.parse(el.textContent) as { baseUrl?: unknown; token?: unknown };
    let base = new URL(typeof cfg.baseUrl === "string" ? cfg.baseUrl : "/", location.href).href;
    if (!base.endsWith("/")) base += "/";
    const headers: Record<string, string> = {};
    if (typeof cfg.token === "string" && cfg.token) headers.Authorization = `token ${cfg.token}`;
    return { base, headers };
  } catch {
    return null;
  }
}

/** Ask the server once per page whether it runs webllm-widget's extension (its status route answers). */
function httpRoute(): Promise<HttpRoute | null> {
  const state = pageState();
  if (!state.route) {
    state.route = (async () => {
      const srv = jupyterServer();
      if (!srv) return null;
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), 5000);
      try {
        const r = await fetch(`${srv.base}webllm-widget/status`, {
          headers: srv.headers, cache: "no-store", credentials: "same-origin", signal: abort.signal,
        });
        return r.ok && (await r.json()).blobs === true ? srv : null;
      } catch {
        return null; // no such route (404 is not thrown), or the network refused: the comm works anyway
      } finally {
        clearTimeout(timer);
      }
    })();
  }
  return state.route;
}

/** The HTTP route failed in a way that will not get better on this page (404: another cache dir or machine). */
function forgetRoute(): void {
  pageState().route = Promise.resolve(null);
}

class HttpFailure extends Error {
  permanent: boolean;
  constructor(message: string, permanent: boolean) {
    super(message);
    this.permanent = permanent;
  }
}

export async function sha256Hex(data: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", data as unknown as ArrayBuffer);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function openCache(): Promise<Cache | undefined> {
  // Cache Storage exists only in secure contexts (https, localhost, 127.0.0.1).
  if (typeof caches === "undefined") return undefined;
  try {
    return await caches.open(CACHE_NAME);
  } catch {
    return undefined;
  }
}

/** True when the page's Cache Storage already holds `sha256`. */
export async function hasCached(sha256: string): Promise<boolean> {
  const cache = await openCache();
  return !!cache && !!(await cache.match(blobUrl(sha256)));
}

/** Remove blobs from Cache Storage (all, or the given ones). */
export async function clearCached(sha256s?: string[]): Promise<void> {
  if (typeof caches === "undefined") return;
  if (!sha256s) {
    await caches.delete(CACHE_NAME);
    return;
  }
  const cache = await openCache();
  for (const s of sha256s) await cache?.delete(blobUrl(s));
}

/** What the kernel answered a `need-blob` with: the bytes (comm), or where the server serves them (HTTP). */
interface Answer {
  id: string;
  data?: Uint8Array;
  url?: string;
  handlerMs?: number;
}

interface Incoming {
  ref: BlobRef;
  data: Uint8Array | null; // allocated with the first chunk (an HTTP answer needs none)
  received: number;
  chunks: number;
  onProgress?: ProgressFn;
  resolve: (answer: Answer) => void;
  reject: (err: unknown) => void;
  // Chunks are also streamed into Cache Storage as they arrive (in order), so storing overlaps receiving.
  sink?: { controller: ReadableStreamDefaultController<Uint8Array>; pos: number };
  handlerMs: number; // time spent in onChunk for this transfer (what our page code costs the comm)
}

/** Stop streaming into the cache: close it when the bytes are all there, else fail it (nothing is stored). */
function endSink(inc: Incoming, err?: unknown): void {
  if (!inc.sink) return;
  if (err === undefined && inc.sink.pos === inc.ref.size) inc.sink.controller.close();
  else inc.sink.controller.error(err ?? new Error("chunks out of order"));
  inc.sink = undefined;
}

/**
 * Gets blobs for one widget's channel. Ask with `get(ref)`; the answer comes from memory,
 * Cache Storage, or the kernel (which then sends `blob` chunks answering our `need-blob`).
 */
export class BlobLoader {
  private channel: PageChannel;
  private incoming = new Map<string, Incoming>(); // by request id
  /** "auto": the server's HTTP route when it has one, else the comm; "comm" never tries HTTP. */
  transport: Transport;

  constructor(channel: PageChannel, opts: { transport?: Transport } = {}) {
    this.channel = channel;
    this.transport = opts.transport ?? "auto";
    serveSiblings();
    channel.on("blob", (msg, buffers) => this.onChunk(msg, buffers));
    channel.on("error", (raw) => {
      const msg = raw as Envelope & ErrorMessage;
      const inc = msg.id ? this.incoming.get(msg.id) : undefined;
      if (!inc) return;
      this.incoming.delete(msg.id!);
      const err = new PageError(isPageErrorCode(msg.code) ? msg.code : "error", String(msg.message ?? "blob transfer failed"));
      endSink(inc, err);
      inc.reject(err);
    });
  }

  /**
   * The bytes of `ref`, verified against its sha256: from Cache Storage, else from the kernel.
   * Concurrent requests for the same blob share one transfer; finished blobs are not kept in page
   * memory (Cache Storage has them). `store: false` skips storing in our cache (for callers that put
   * the bytes into a cache of their own, e.g. web-llm's).
   */
  get(ref: BlobRef, onProgress?: ProgressFn, opts: { store?: boolean } = {}): Promise<Uint8Array> {
    const state = pageState();
    let p = state.bytes.get(ref.sha256);
    if (!p) {
      p = this.fetch(ref, onProgress, opts.store ?? true);
      state.bytes.set(ref.sha256, p);
      const forget = () => { state.bytes.delete(ref.sha256); };
      p.then(forget, forget);
    }
    return p;
  }

  /** Import an ES module bundle shipped as a blob; one import per page, shared by all widgets. */
  importModule<T = unknown>(ref: BlobRef, onProgress?: ProgressFn): Promise<T> {
    const state = pageState();
    let p = state.modules.get(ref.sha256);
    if (!p) {
      p = this.get(ref, onProgress).then((bytes) => {
        const url = URL.createObjectURL(new Blob([bytes as unknown as BlobPart], { type: "text/javascript" }));
        return import(/* webpackIgnore: true */ /* @vite-ignore */ url);
      });
      state.modules.set(ref.sha256, p);
      p.catch(() => state.modules.delete(ref.sha256));
    }
    return p as Promise<T>;
  }

  private async fetch(ref: BlobRef, onProgress: ProgressFn | undefined, store: boolean): Promise<Uint8Array> {
    const stats = pageState().stats;
    const cache = await openCache();
    const hit = cache ? await cache.match(blobUrl(ref.sha256)) : undefined;
    if (hit) {
      const data = new Uint8Array(await hit.arrayBuffer());
      // Checked by content, not only size: a damaged copy must never be used (then it is fetched again).
      if (data.length === ref.size && (await sha256Hex(data)) === ref.sha256) {
        stats.cache += data.length;
        onProgress?.(ref, data.length, true);
        return data;
      }
      console.warn(`webllm-widget: the cached copy of ${ref.name} is damaged; fetching it again`);
      await cache!.delete(blobUrl(ref.sha256));
    }
    // Another output frame of this page may hold it (hosts that give each output its own origin and storage)
    const fromPeer = ref.size > 0 ? await fromSiblings(ref) : null;
    if (fromPeer && fromPeer.length === ref.size && (await sha256Hex(fromPeer)) === ref.sha256) {
      stats.siblings = (stats.siblings ?? 0) + fromPeer.length;
      onProgress?.(ref, fromPeer.length, true);
      if (cache && store) {
        try {
          await cache.put(blobUrl(ref.sha256), new Response(fromPeer as unknown as BodyInit, {
            headers: { "content-type": "application/octet-stream", "content-length": String(fromPeer.length) },
          }));
        } catch (err) {
          console.warn(`webllm-widget: could not store ${ref.name} in Cache Storage`, err);
        }
      }
      return fromPeer;
    }
    let data: Uint8Array | undefined;
    let retry: Pick<NeedBlob, "http_error" | "retry_of"> = {};
    const t0 = performance.now();
    let verifyMs = 0;
    let storedAlready = false;
    const route = this.transport === "comm" || ref.size === 0 ? null : await httpRoute();
    if (route) {
      const answer = await this.fromKernel(ref, onProgress, "http");
      if (answer.url) {
        try {
          const got = await this.fromHttp(route, answer.url, ref, onProgress, store ? cache : undefined);
          data = got.data;
          verifyMs = got.verify_ms;
          storedAlready = got.stored;
          stats.http += data.length;
          this.channel.send("ack", { sha256: ref.sha256, received: data.length, chunks: 0, via: "http" }, [], answer.id);
        } catch (err) {
          // Not fatal: the comm still works. Tell the kernel so it drops its published copy.
          stats.http_failures += 1;
          if (err instanceof HttpFailure && err.permanent) forgetRoute();
          console.warn(`webllm-widget: ${ref.name} over HTTP failed (${String(err)}); using the comm`);
          retry = { http_error: String(err).slice(0, 300), retry_of: answer.id };
        }
      } else {
        data = answer.data; // the kernel chose the comm (publishing failed, or it was told to)
      }
    }
    const verified = !!data; // fromHttp checked it already
    let storing: Promise<boolean> | undefined;
    let handlerMs: number | undefined;
    if (!data) {
      const target = cache && store ? cache : undefined;
      const answer = await this.fromKernel(ref, onProgress, "comm", retry, target, (p) => (storing = p));
      data = answer.data!;
      handlerMs = answer.handlerMs;
    }
    const tReceived = performance.now();
    const digest = verified ? ref.sha256 : await sha256Hex(data);
    const tVerified = performance.now();
    if (!verified) verifyMs = tVerified - tReceived;
    if (storing) storedAlready = await storing;
    if (digest !== ref.sha256) {
      if (storing && storedAlready) await cache!.delete(blobUrl(ref.sha256));
      throw new PageError(
        "bad-artifact",
        `${ref.name}: received ${data.length} bytes whose sha256 is ${digest}, expected ${ref.sha256}. ` +
          "The kernel's file no longer matches the hash recorded for it (changed or damaged on disk: rebuild it), " +
          "or the transfer was corrupted (load it again).",
        { sha256: ref.sha256, name: ref.name },
      );
    }
    if (cache && store && !storedAlready) {
      try {
        await cache.put(blobUrl(ref.sha256), new Response(data as unknown as BodyInit, {
          headers: { "content-type": "application/octet-stream", "content-length": String(data.length) },
        }));
      } catch (err) {
        // Quota exceeded or storage disabled: the blob still works for this page.
        console.warn(`webllm-widget: could not store ${ref.name} in Cache Storage`, err);
      }
    }
    stats.last = { via: verified ? "http" : "comm", receive_ms: tReceived - t0 - (verified ? verifyMs : 0),
                   verify_ms: verifyMs, store_ms: performance.now() - tVerified, bytes: data.length, handler_ms: handlerMs };
    return data;
  }

  /**
   * GET the published blob from the server; checks size and sha256 before anything is returned. With `cache`, the
   * response goes straight into Cache Storage (Chromium's native path: no JS reads, ~2x faster here than teeing
   * the body and reading one branch in JS), then is read back and hashed with WebCrypto (~3x faster than an
   * incremental wasm sha256 here); a stored copy whose bytes turn out wrong is deleted before this throws.
   * Without `cache` the body is read in JS (progress about every MiB) and hashed once it is all there.
   */
  private async fromHttp(route: HttpRoute, url: string, ref: BlobRef, onProgress?: ProgressFn,
                         cache?: Cache): Promise<{ data: Uint8Array; verify_ms: number; stored: boolean }> {
    let resp: Response;
    try {
      // no-store: the bytes go to Cache Storage; a second copy in the HTTP cache would only cost disk.
      resp = await fetch(route.base + url, { headers: route.headers, cache: "no-store", credentials: "same-origin" });
    } catch (err) {
      throw new HttpFailure(`GET ${url}: ${String(err)}`, true);
    }
    if (!resp.ok || !resp.body) throw new HttpFailure(`GET ${url}: HTTP ${resp.status}`, resp.status === 404 || resp.status === 403);
    let data: Uint8Array | undefined;
    let stored = false;
    if (cache) {
      const key = blobUrl(ref.sha256);
      try {
        await cache.put(key, resp);
        const back = await cache.match(key);
        if (back) {
          data = new Uint8Array(await back.arrayBuffer());
          stored = true;
        }
      } catch (err) {
        // Quota exceeded or storage disabled: nothing usable stored; fetch once more without storing.
        console.warn(`webllm-widget: could not store ${ref.name} in Cache Storage`, err);
        await cache.delete(key).catch(() => false);
      }
      if (!data) return this.fromHttp(route, url, ref, onProgress, undefined);
      onProgress?.(ref, Math.min(data.length, ref.size), false);
    } else {
      data = await this.readBody(resp.body, url, ref, onProgress);
    }
    const t = performance.now();
    let failure: HttpFailure | undefined;
    if (data.length !== ref.size) failure = new HttpFailure(`GET ${url}: ${data.length} bytes, expected ${ref.size}`, false);
    else {
      const digest = await sha256Hex(data);
      if (digest !== ref.sha256) failure = new HttpFailure(`GET ${url}: sha256 ${digest}, expected ${ref.sha256}`, false);
    }
    const verifyMs = performance.now() - t;
    if (failure) {
      if (stored) await cache!.delete(blobUrl(ref.sha256));
      throw failure;
    }
    return { data, verify_ms: verifyMs, stored };
  }

  /** Read a response body into one buffer of `ref.size` bytes, with progress; a body of another size throws. */
  private async readBody(body: ReadableStream<Uint8Array>, url: string, ref: BlobRef,
                         onProgress?: ProgressFn): Promise<Uint8Array> {
    const data = new Uint8Array(ref.size);
    const reader = body.getReader();
    let received = 0;
    let reported = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (received + value.byteLength > ref.size) {
        await reader.cancel();
        throw new HttpFailure(`GET ${url}: more than the ${ref.size} bytes expected`, false);
      }
      data.set(value, received);
      received += value.byteLength;
      // Network reads are small (tens of KB): report about every MiB, like the comm's chunks.
      if (received - reported >= 1 << 20 || received === ref.size) {
        reported = received;
        onProgress?.(ref, received, false);
      }
    }
    if (received !== ref.size) throw new HttpFailure(`GET ${url}: ${received} of ${ref.size} bytes`, false);
    return data;
  }

  private fromKernel(ref: BlobRef, onProgress: ProgressFn | undefined, via: "http" | "comm",
                     extra: Pick<NeedBlob, "http_error" | "retry_of"> = {}, cache?: Cache,
                     onStoring?: (p: Promise<boolean>) => void): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const id = newId("b");
      if (ref.size === 0) {
        resolve({ id, data: new Uint8Array(0) });
        return;
      }
      const inc: Incoming = { ref, data: null, received: 0, chunks: 0, onProgress, resolve, reject, handlerMs: 0 };
      if (cache && onStoring) {
        let controller!: ReadableStreamDefaultController<Uint8Array>;
        const body = new ReadableStream<Uint8Array>({ start: (c) => { controller = c; } });
        inc.sink = { controller, pos: 0 };
        onStoring(cache.put(blobUrl(ref.sha256), new Response(body, {
          headers: { "content-type": "application/octet-stream", "content-length": String(ref.size) },
        })).then(() => true, () => false)); // not stored (out of order, failed, quota): stored after, or not at all
      }
      this.incoming.set(id, inc);
      this.channel.send("need-blob", { ...extra, sha256: ref.sha256, size: ref.size, name: ref.name, via }, [], id);
    });
  }

  private onChunk(raw: Envelope, buffers: DataView[]): void {
    const msg = raw as Envelope & BlobChunk;
    const inc = msg.id ? this.incoming.get(msg.id) : undefined;
    if (!inc) return;
    if (typeof msg.url === "string" && !buffers.length) {
      // The kernel published the blob for the server's route: fetch it from there.
      this.incoming.delete(msg.id!);
      inc.resolve({ id: msg.id!, url: msg.url });
      return;
    }
    const tStart = performance.now();
    const offset = Number(msg.offset);
    const buf = buffers[0];
    if (!buf || offset + buf.byteLength > inc.ref.size) {
      this.incoming.delete(msg.id!);
      const err = new PageError("bad-artifact", `${inc.ref.name}: chunk at ${offset} does not fit ${inc.ref.size} bytes`);
      endSink(inc, err);
      inc.reject(err);
      return;
    }
    if (!inc.data) inc.data = new Uint8Array(inc.ref.size);
    const chunk = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    inc.data.set(chunk, offset);
    if (inc.sink) {
      if (offset === inc.sink.pos) {
        // A view of the assembled bytes (no copy; they never change after this).
        inc.sink.controller.enqueue(inc.data.subarray(offset, offset + buf.byteLength));
        inc.sink.pos += buf.byteLength;
      } else endSink(inc);
    }
    inc.received += buf.byteLength;
    pageState().stats.comm += buf.byteLength;
    inc.chunks += 1;
    const finished = inc.received >= inc.ref.size;
    if (inc.chunks % ACK_EVERY === 0 || finished) {
      this.channel.send("ack", { sha256: inc.ref.sha256, received: inc.received, chunks: inc.chunks }, [], msg.id);
    }
    inc.onProgress?.(inc.ref, inc.received, false);
    inc.handlerMs += performance.now() - tStart;
    if (finished) {
      this.incoming.delete(msg.id!);
      endSink(inc);
      inc.resolve({ id: msg.id!, data: inc.data, handlerMs: inc.handlerMs });
    }
  }
}
