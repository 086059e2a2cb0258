// Content-addressed blobs on the page: Cache Storage first, else fetched from the kernel in chunks,
// verified by sha256 before they are stored; bundles are imported once from a Blob URL.
import { PageChannel, PageError, Envelope, newId } from "./protocol";

/** What the kernel offers: enough to look the blob up and to check it. */
export interface BlobRef {
  sha256: string;
  size: number;
  name: string;
}

export type ProgressFn = (ref: BlobRef, received: number, fromCache: boolean) => void;

export const CACHE_NAME = "webllm-widget/blobs";
/** Cache Storage keys are URLs; a synthetic one names the content, not a place. */
export const blobUrl = (sha256: string) => `https://webllm-widget.invalid/blobs/${sha256}`;
/** Page acks every ACK_EVERY chunks; the kernel keeps at most its window outstanding. */
export const ACK_EVERY = 8;

// Shared by every widget on the page: a transfer in flight is shared, a bundle is imported once.
interface PageState {
  bytes: Map<string, Promise<Uint8Array>>; // in flight only
  modules: Map<string, Promise<unknown>>;
}
const STATE_KEY = "__webllmWidgetBlobs";
function pageState(): PageState {
  const g = globalThis as unknown as Record<string, PageState>;
  if (!g[STATE_KEY]) g[STATE_KEY] = { bytes: new Map(), modules: new Map() };
  return g[STATE_KEY];
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

interface Incoming {
  ref: BlobRef;
  data: Uint8Array;
  received: number;
  chunks: number;
  onProgress?: ProgressFn;
  resolve: (data: Uint8Array) => void;
  reject: (err: unknown) => void;
}

/**
 * Gets blobs for one widget's channel. Ask with `get(ref)`; the answer comes from memory,
 * Cache Storage, or the kernel (which then sends `blob` chunks answering our `need-blob`).
 */
export class BlobLoader {
  private channel: PageChannel;
  private incoming = new Map<string, Incoming>(); // by request id

  constructor(channel: PageChannel) {
    this.channel = channel;
    channel.on("blob", (msg, buffers) => this.onChunk(msg, buffers));
    channel.on("error", (msg) => {
      const inc = msg.id ? this.incoming.get(msg.id) : undefined;
      if (!inc) return;
      this.incoming.delete(msg.id!);
      inc.reject(new PageError(String(msg.code ?? "error"), String(msg.message ?? "blob transfer failed")));
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
    const cache = await openCache();
    const hit = cache ? await cache.match(blobUrl(ref.sha256)) : undefined;
    if (hit) {
      const data = new Uint8Array(await hit.arrayBuffer());
      // Checked by content, not only size: a damaged copy must never be used (then it is fetched again).
      if (data.length === ref.size && (await sha256Hex(data)) === ref.sha256) {
        onProgress?.(ref, data.length, true);
        return data;
      }
      console.warn(`webllm-widget: the cached copy of ${ref.name} is damaged; fetching it again`);
      await cache!.delete(blobUrl(ref.sha256));
    }
    const data = await this.fromKernel(ref, onProgress);
    const digest = await sha256Hex(data);
    if (digest !== ref.sha256) {
      throw new PageError(
        "bad-artifact",
        `${ref.name}: received ${data.length} bytes whose sha256 is ${digest}, expected ${ref.sha256}. ` +
          "The kernel's file no longer matches the hash recorded for it (changed or damaged on disk: rebuild it), " +
          "or the transfer was corrupted (load it again).",
        { sha256: ref.sha256, name: ref.name },
      );
    }
    if (cache && store) {
      try {
        await cache.put(blobUrl(ref.sha256), new Response(data as unknown as BodyInit, {
          headers: { "content-type": "application/octet-stream", "content-length": String(data.length) },
        }));
      } catch (err) {
        // Quota exceeded or storage disabled: the blob still works for this page.
        console.warn(`webllm-widget: could not store ${ref.name} in Cache Storage`, err);
      }
    }
    return data;
  }

  private fromKernel(ref: BlobRef, onProgress?: ProgressFn): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      const id = newId("b");
      this.incoming.set(id, {
        ref, data: new Uint8Array(ref.size), received: 0, chunks: 0, onProgress, resolve, reject,
      });
      if (ref.size === 0) {
        this.incoming.delete(id);
        resolve(new Uint8Array(0));
        return;
      }
      this.channel.send("need-blob", { id, sha256: ref.sha256, size: ref.size, name: ref.name });
    });
  }

  private onChunk(msg: Envelope, buffers: DataView[]): void {
    const inc = msg.id ? this.incoming.get(msg.id) : undefined;
    if (!inc) return;
    const offset = Number(msg.offset);
    const buf = buffers[0];
    if (!buf || offset + buf.byteLength > inc.ref.size) {
      this.incoming.delete(msg.id!);
      inc.reject(new PageError("bad-artifact", `${inc.ref.name}: chunk at ${offset} does not fit ${inc.ref.size} bytes`));
      return;
    }
    inc.data.set(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), offset);
    inc.received += buf.byteLength;
    inc.chunks += 1;
    const finished = inc.received >= inc.ref.size;
    if (inc.chunks % ACK_EVERY === 0 || finished) {
      this.channel.send("ack", { id: msg.id, sha256: inc.ref.sha256, received: inc.received, chunks: inc.chunks });
    }
    inc.onProgress?.(inc.ref, inc.received, false);
    if (finished) {
      this.incoming.delete(msg.id!);
      inc.resolve(inc.data);
    }
  }
}
