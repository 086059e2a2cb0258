// Blobs from sibling output frames. Where a host gives every output its own origin (Colab), each output frame has
// its own Cache Storage, so a second view of a model, or a second chat with the same model, would get every file
// over the comm again. A frame that misses a blob first asks the other frames of its parent page, by sha256; a
// frame running this package that holds it (in the loader's cache, or in web-llm's caches, where model files are
// kept) answers with the bytes, and the asking frame checks them like any other. Only content named by its hash
// travels this way, never a conversation. Hand-written: this is the package's own frame-to-frame exchange.
import { blobUrl, CACHE_NAME, sha256Hex, type BlobRef } from "./loader";

const HELLO = "webllm-widget:siblings?";
const HERE = "webllm-widget:siblings!";
const ASK = "webllm-widget:blob?";
const ANSWER = "webllm-widget:blob!";
/** Caches a sibling may hold a file in after the loader's own: web-llm's (model files, config, library). */
const WEBLLM_CACHES = ["webllm/model", "webllm/config", "webllm/wasm"];
/** How long a frame waits for siblings to say they are there (once per page). */
const HELLO_MS = 400;
/** How long a frame waits for the siblings' answers about one blob. */
const ANSWER_MS = 5000;

interface SiblingMsg { type: string; nonce?: string; sha256?: string; size?: number; name?: string; found?: boolean; data?: ArrayBuffer | null }

const g = globalThis as unknown as { __wlwSiblings?: { served: boolean; known?: Promise<Window[]> } };
const state = (g.__wlwSiblings ??= { served: false });

function others(): Window[] {
  if (typeof window === "undefined" || window.parent === window) return [];
  const out: Window[] = [];
  try {
    for (let i = 0; i < window.parent.frames.length; i++) {
      const w = window.parent.frames[i];
      if (w && w !== window) out.push(w);
    }
  } catch {
    return [];
  }
  return out;
}

async function findLocal(sha256: string, size: number, name: string): Promise<ArrayBuffer | null> {
  if (typeof caches === "undefined") return null;
  // CACHE_NAME is read here, not at module load: this module and loader.ts import each other
  for (const cname of [CACHE_NAME, ...WEBLLM_CACHES]) {
    if (!(await caches.has(cname))) continue;
    const cache = await caches.open(cname);
    const requests = cname === CACHE_NAME ? [new Request(blobUrl(sha256))]
      : (await cache.keys()).filter((r) => r.url.endsWith(`/${name}`));
    for (const req of requests) {
      const resp = await cache.match(req);
      if (!resp) continue;
      const buf = await resp.arrayBuffer();
      if (buf.byteLength === size && (await sha256Hex(new Uint8Array(buf))) === sha256) return buf;
    }
  }
  return null;
}

/** Answer the other frames' questions (once per frame; nothing happens in a top-level page). */
export function serveSiblings(): void {
  if (state.served || typeof window === "undefined" || window.parent === window) return;
  state.served = true;
  window.addEventListener("message", async (ev: MessageEvent) => {
    const d = ev.data as SiblingMsg;
    const from = ev.source as Window | null;
    if (!d || !from || from === window) return;
    if (d.type === HELLO) {
      from.postMessage({ type: HERE, nonce: d.nonce }, "*");
    } else if (d.type === ASK && d.sha256 && typeof d.size === "number") {
      let buf: ArrayBuffer | null = null;
      try {
        buf = await findLocal(d.sha256, d.size, String(d.name ?? ""));
      } catch {
        buf = null;
      }
      from.postMessage({ type: ANSWER, nonce: d.nonce, found: !!buf, data: buf }, "*", buf ? [buf] : []);
    }
  });
}

function nonce(): string {
  return Math.random().toString(36).slice(2) + Date.now().toString(36);
}

/** The sibling frames that run this package (asked once per page). */
function siblings(): Promise<Window[]> {
  if (!state.known) {
    state.known = new Promise((resolve) => {
      const all = others();
      if (!all.length) return resolve([]);
      const n = nonce();
      const found: Window[] = [];
      const on = (ev: MessageEvent) => {
        const d = ev.data as SiblingMsg;
        if (d && d.type === HERE && d.nonce === n && ev.source) found.push(ev.source as Window);
      };
      window.addEventListener("message", on);
      for (const w of all) {
        try { w.postMessage({ type: HELLO, nonce: n }, "*"); } catch { /* a frame that went away */ }
      }
      setTimeout(() => { window.removeEventListener("message", on); resolve(found); }, HELLO_MS);
    });
  }
  return state.known;
}

/** The bytes of `ref` from a sibling frame, unchecked (the caller verifies them), or null. */
export async function fromSiblings(ref: BlobRef): Promise<Uint8Array | null> {
  const peers = await siblings();
  if (!peers.length) return null;
  const n = nonce();
  return new Promise((resolve) => {
    let pending = peers.length;
    let done = false;
    const finish = (v: Uint8Array | null) => {
      if (done) return;
      done = true;
      window.removeEventListener("message", on);
      clearTimeout(timer);
      resolve(v);
    };
    const on = (ev: MessageEvent) => {
      const d = ev.data as SiblingMsg;
      if (!d || d.type !== ANSWER || d.nonce !== n) return;
      if (d.found && d.data) finish(new Uint8Array(d.data));
      else if (--pending === 0) finish(null);
    };
    window.addEventListener("message", on);
    const timer = setTimeout(() => finish(null), ANSWER_MS);
    for (const w of peers) {
      try {
        w.postMessage({ type: ASK, nonce: n, sha256: ref.sha256, size: ref.size, name: ref.name }, "*");
      } catch {
        if (--pending === 0) finish(null);
      }
    }
  });
}
