// Page side of the channel benchmark widget (also the transport tests' widget): artifact loads through the
// project's BlobLoader (over the comm, or "auto" = the server's HTTP route when there is one), Jupyter's own
// /files/ endpoint as a baseline, and a stream of token messages from a Web Worker relayed to the kernel
// the way the chat engine's tokens are.
import { PageChannel, Envelope } from "../../js/src/protocol";
import { BlobLoader, BlobRef, CACHE_NAME, blobStats, blobUrl, jupyterServer, sha256Hex } from "../../js/src/loader";

const now = () => performance.now();

async function clearAll(): Promise<void> {
  await caches.delete(CACHE_NAME);
}

/** The sha256 of what Cache Storage holds for `sha`, or null: proves what was stored, not what was sent. */
async function storedDigest(sha: string): Promise<string | null> {
  const hit = await (await caches.open(CACHE_NAME)).match(blobUrl(sha));
  return hit ? sha256Hex(new Uint8Array(await hit.arrayBuffer())) : null;
}

/** Baseline: Jupyter's /files/ endpoint -> Cache Storage straight from the response, then read back and verified. */
async function viaFiles(ref: BlobRef, path: string): Promise<Record<string, number>> {
  const srv = jupyterServer();
  if (!srv) throw new Error("not in a Jupyter page");
  const t0 = now();
  const cache = await caches.open(CACHE_NAME);
  const resp = await fetch(`${srv.base}${path}`, { cache: "no-store", headers: srv.headers });
  if (!resp.ok) throw new Error(`HTTP ${resp.status} for ${path}`);
  await cache.put(blobUrl(ref.sha256), resp);
  const tStored = now();
  const digest = await storedDigest(ref.sha256);
  if (digest !== ref.sha256) throw new Error(`${path}: stored sha256 ${digest}, expected ${ref.sha256}`);
  return { stored_ms: tStored - t0, verified_ms: now() - t0 };
}

// The engine runs in a Web Worker and posts each token to the page, which relays it to the kernel:
// this worker does the same, stamping each token with the wall clock when it is emitted.
const EMITTER = `
onmessage = async (e) => {
  const { n, gap } = e.data;
  for (let i = 0; i < n; i++) {
    postMessage({ i, t: performance.timeOrigin + performance.now() });
    if (gap > 0) await new Promise((r) => setTimeout(r, gap));
  }
  postMessage({ done: true });
};`;

function emitFromWorker(n: number, gap: number, onToken: (t: { i: number; t: number }) => void): Promise<void> {
  const url = URL.createObjectURL(new Blob([EMITTER], { type: "text/javascript" }));
  const worker = new Worker(url);
  return new Promise((resolve) => {
    worker.onmessage = (e) => {
      if (e.data.done) {
        worker.terminate();
        URL.revokeObjectURL(url);
        resolve();
      } else onToken(e.data);
    };
    worker.postMessage({ n, gap });
  });
}

function initialize({ model }: { model: any }) {
  const ch = new PageChannel(model);
  const loaders = { auto: new BlobLoader(ch), comm: new BlobLoader(ch, { transport: "comm" }) };

  ch.on("call", async (msg: Envelope) => {
    const op = String(msg.op);
    if (op === "clear") {
      await clearAll();
      ch.reply(msg, "result", {});
    } else if (op === "load") {
      // The product path: BlobLoader.get -> bytes verified, and with `store` also kept in Cache Storage.
      // store:false is how the chat engine gets model files (web-llm's own cache keeps them).
      const ref = msg.ref as BlobRef;
      const loader = msg.transport === "comm" ? loaders.comm : loaders.auto;
      const before = blobStats();
      const t0 = now();
      const data = await loader.get(ref, undefined, { store: msg.store !== false });
      const pageMs = now() - t0;
      const after = blobStats();
      const digest = msg.check ? await storedDigest(ref.sha256) : undefined;
      ch.reply(msg, "result", {
        page_ms: pageMs, bytes: data.length, digest, timing: after.last,
        via: { comm: after.comm - before.comm, http: after.http - before.http, cache: after.cache - before.cache,
               http_failures: after.http_failures - before.http_failures },
      });
    } else if (op === "load-files") {
      ch.reply(msg, "result", await viaFiles(msg.ref as BlobRef, String(msg.path)));
    } else if (op === "emit") {
      const n = Number(msg.n), gap = Number(msg.interval_ms);
      await emitFromWorker(n, gap, (tok) => ch.reply(msg, "token", tok));
      ch.reply(msg, "done", { n });
    } else {
      throw new Error(`unknown op ${op}`);
    }
  });
  ch.ready({ bench: "channel", jupyter: !!jupyterServer() });
}

// A marker the benchmark driver waits for before it detaches (bench/channel.py).
function render({ el }: { el: HTMLElement }) {
  el.classList.add("wlw-channel-bench");
  el.textContent = "webllm-widget channel benchmark";
}

export default { initialize, render };
