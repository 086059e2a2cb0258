// Page side of the channel benchmark widget: artifact transfer over the comm (the project's BlobLoader)
// and over the server extension's HTTP route, and a stream of page -> kernel messages for latency.
import { PageChannel, Envelope } from "../../js/src/protocol";
import { BlobLoader, BlobRef, CACHE_NAME, blobUrl, sha256Hex } from "../../js/src/loader";

const now = () => performance.now();
/** Wall-clock ms with sub-ms resolution, comparable with Python's time.time() on the same machine. */
const wallMs = () => performance.timeOrigin + performance.now();

function jupyterBaseUrl(): string {
  const el = document.getElementById("jupyter-config-data");
  if (el?.textContent) {
    try {
      const cfg = JSON.parse(el.textContent);
      if (cfg.baseUrl) return String(cfg.baseUrl);
    } catch {
      /* not JupyterLab: fall through */
    }
  }
  return "/";
}

async function clearAll(): Promise<void> {
  await caches.delete(CACHE_NAME);
  // The loader also keeps fetched blobs in page memory; forget them so the next get goes to the kernel.
  delete (globalThis as Record<string, unknown>)["__webllmWidgetBlobs"];
}

/** fetch -> Cache Storage straight from the response, then read back and verify the sha256. */
async function viaHttp(base: string, ref: BlobRef, path?: string): Promise<Record<string, number>> {
  const t0 = now();
  const cache = await caches.open(CACHE_NAME);
  const resp = await fetch(`${base}${path ?? `webllm-widget/blobs/${ref.sha256}`}`, { cache: "no-store" });
  if (!resp.ok) throw new Error(`HTTP ${resp.status} for blob ${ref.sha256}`);
  await cache.put(blobUrl(ref.sha256), resp);
  const tStored = now();
  const hit = await cache.match(blobUrl(ref.sha256));
  const data = new Uint8Array(await hit!.arrayBuffer());
  const digest = await sha256Hex(data);
  const tVerified = now();
  if (digest !== ref.sha256 || data.length !== ref.size) {
    await cache.delete(blobUrl(ref.sha256));
    throw new Error(`blob ${ref.sha256}: got ${data.length} bytes with sha256 ${digest}`);
  }
  return { stored_ms: tStored - t0, verified_ms: tVerified - t0 };
}

function initialize({ model }: { model: any }) {
  const ch = new PageChannel(model);
  const loader = new BlobLoader(ch);
  const base = jupyterBaseUrl();

  ch.on("call", async (msg: Envelope) => {
    const op = String(msg.op);
    if (op === "clear") {
      await clearAll();
      ch.reply(msg, "result", {});
    } else if (op === "probe") {
      let route = false;
      try {
        const r = await fetch(`${base}webllm-widget/status`, { cache: "no-store" });
        route = r.ok && (await r.json()).blobs === true;
      } catch {
        route = false;
      }
      ch.reply(msg, "result", { route, base });
    } else if (op === "load-comm") {
      const ref = msg.ref as BlobRef;
      const t0 = now();
      const data = await loader.get(ref);
      const t1 = now();
      // BlobLoader stored it in Cache Storage before resolving; check it is there.
      const stored = !!(await (await caches.open(CACHE_NAME)).match(blobUrl(ref.sha256)));
      ch.reply(msg, "result", { page_ms: t1 - t0, bytes: data.length, stored });
    } else if (op === "load-http") {
      const times = await viaHttp(base, msg.ref as BlobRef, msg.path ? String(msg.path) : undefined);
      ch.reply(msg, "result", times);
    } else if (op === "emit") {
      // Token-like messages at a steady pace, each stamped with the page's wall clock at send time.
      const n = Number(msg.n), gap = Number(msg.interval_ms);
      for (let i = 0; i < n; i++) {
        ch.reply(msg, "token", { i, t: wallMs() });
        if (gap > 0) await new Promise((r) => setTimeout(r, gap));
      }
      ch.reply(msg, "done", { n });
    } else {
      throw new Error(`unknown op ${op}`);
    }
  });
  ch.ready({ bench: "channel" });
}

export default { initialize, render() {} };
