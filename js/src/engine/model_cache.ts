// The models this browser keeps for the page, as a person manages them: list them with their sizes, delete one or
// all, the origin's storage estimate and a persistence request; and the error a full quota ends in.
//
// Model files live where web-llm reads them (Cache Storage "webllm/config", "webllm/model", "webllm/wasm"), keyed
// by URL: a local folder under its synthetic URL (model_files.ts), a prebuilt model under its Hugging Face URL, its
// library under the library host's. Files are grouped by the model's base URL (".../resolve/<rev>/"); an index
// ("webllm-widget/models") names each group (model id, key, library URL), written once a model's files are all
// stored. The engine bundle and other content-addressed blobs ("webllm-widget/blobs") are one more group.
import { EngineError } from "./types";

export const INDEX_CACHE = "webllm-widget/models";
export const BLOB_CACHE = "webllm-widget/blobs";
export const MODEL_SCOPES = ["webllm/config", "webllm/model", "webllm/wasm"];
const BLOBS_URL = "https://webllm-widget.invalid/blobs/";

export interface CachedModel {
  /** The model id (from the index), else the base URL. */
  id: string;
  /** Base URL the files are under (what delete() takes, besides the id and key). */
  url: string;
  key?: string;
  kind: "folder" | "prebuilt" | "url" | "blobs";
  bytes: number;
  files: number;
  /** The index names it: every file was stored. False for files left by something else (or an older version). */
  indexed: boolean;
}

interface IndexRecord {
  id: string;
  url: string;
  key?: string;
  kind: "folder" | "prebuilt" | "url";
  lib_url?: string;
}

const hasCaches = () => typeof caches !== "undefined";

/** Records a model whose files are all stored (called after install or a successful prebuilt load). */
export async function recordModel(rec: IndexRecord): Promise<void> {
  if (!hasCaches()) return;
  try {
    await (await caches.open(INDEX_CACHE)).put(rec.url, new Response(JSON.stringify(rec), { headers: { "content-type": "application/json" } }));
  } catch {
    /* a full quota: the listing still finds the files by URL */
  }
}

/** The base URL of a model file's URL (".../resolve/<rev>/"), or null for a file outside that layout. */
export function baseOf(url: string): string | null {
  const m = /^(.*?\/resolve\/[^/]+\/)/.exec(url);
  return m ? m[1] : null;
}

async function sizeOf(r: Response | undefined): Promise<number> {
  if (!r) return 0;
  const n = Number(r.headers.get("content-length"));
  if (Number.isFinite(n) && n > 0) return n;
  return (await r.blob()).size;
}

async function readIndex(): Promise<Map<string, IndexRecord>> {
  const out = new Map<string, IndexRecord>();
  if (!(await caches.has(INDEX_CACHE))) return out;
  const index = await caches.open(INDEX_CACHE);
  for (const req of await index.keys()) {
    try {
      const rec = (await (await index.match(req))!.json()) as IndexRecord;
      out.set(req.url, rec);
    } catch {
      /* unreadable record: its files are still listed by URL */
    }
  }
  return out;
}

/** Every file of every model, by group (base URL): [cache name, request URL, bytes]. */
async function scan(): Promise<{ groups: Map<string, [string, string, number][]>; index: Map<string, IndexRecord> }> {
  const groups = new Map<string, [string, string, number][]>();
  const index = await readIndex();
  const libOwner = new Map([...index.values()].filter((r) => r.lib_url).map((r) => [r.lib_url!, r.url]));
  for (const name of MODEL_SCOPES) {
    if (!(await caches.has(name))) continue;
    const cache = await caches.open(name);
    for (const req of await cache.keys()) {
      const group = baseOf(req.url) ?? libOwner.get(req.url) ?? req.url;
      const list = groups.get(group) ?? [];
      list.push([name, req.url, await sizeOf(await cache.match(req))]);
      groups.set(group, list);
    }
  }
  if (await caches.has(BLOB_CACHE)) {
    const cache = await caches.open(BLOB_CACHE);
    const list: [string, string, number][] = [];
    for (const req of await cache.keys()) list.push([BLOB_CACHE, req.url, await sizeOf(await cache.match(req))]);
    if (list.length) groups.set(BLOBS_URL, list);
  }
  return { groups, index };
}

/** The models (and the blob store) cached for this origin, largest first. */
export async function listCached(): Promise<CachedModel[]> {
  if (!hasCaches()) return [];
  const { groups, index } = await scan();
  const out: CachedModel[] = [];
  for (const [url, files] of groups) {
    const rec = index.get(url);
    const kind = url === BLOBS_URL ? "blobs" : rec?.kind ?? (url.startsWith("https://webllm-widget.invalid/") ? "folder" : "url");
    out.push({
      id: url === BLOBS_URL ? "webllm-widget blobs (engine bundle)" : rec?.id ?? url,
      url, key: rec?.key, kind, bytes: files.reduce((n, f) => n + f[2], 0), files: files.length, indexed: Boolean(rec),
    });
  }
  return out.sort((a, b) => b.bytes - a.bytes);
}

/**
 * Deletes every cached model that `targets` names (its id, key, or base URL; a URL prefix names all under it), or
 * everything ("all"). Returns what was deleted.
 */
export async function deleteCached(targets: string[] | "all"): Promise<CachedModel[]> {
  if (!hasCaches()) return [];
  const listed = await listCached();
  if (targets === "all") {
    for (const name of [...MODEL_SCOPES, INDEX_CACHE, BLOB_CACHE]) await caches.delete(name);
    return listed;
  }
  const hit = listed.filter((m) => targets.some((t) => t && (t === m.id || t === m.key || t === m.url
    || (/^https?:\/\//.test(t) && m.url.startsWith(t)))));
  if (!hit.length) return [];
  const { groups } = await scan();
  for (const m of hit) {
    for (const [name, url] of groups.get(m.url) ?? []) await (await caches.open(name)).delete(url);
    if (await caches.has(INDEX_CACHE)) await (await caches.open(INDEX_CACHE)).delete(m.url);
  }
  return hit;
}

/** Deletes every file under `base` (and `libUrl`): what a failed install leaves must not stay cached. */
export async function deleteGroup(base: string, libUrl?: string): Promise<void> {
  if (!hasCaches()) return;
  for (const name of MODEL_SCOPES) {
    if (!(await caches.has(name))) continue;
    const cache = await caches.open(name);
    for (const req of await cache.keys()) if (req.url.startsWith(base) || req.url === libUrl) await cache.delete(req);
  }
  if (await caches.has(INDEX_CACHE)) await (await caches.open(INDEX_CACHE)).delete(base);
}

export interface StorageInfo {
  usage: number | null;
  quota: number | null;
  persisted: boolean | null;
}

export async function storageInfo(): Promise<StorageInfo> {
  const s = (globalThis.navigator as Navigator | undefined)?.storage;
  const est = s?.estimate ? await s.estimate().catch(() => null) : null;
  const persisted = s?.persisted ? await s.persisted().catch(() => null) : null;
  return { usage: est?.usage ?? null, quota: est?.quota ?? null, persisted };
}

/** Asks the browser to keep this origin's storage under pressure (it may say no: then it evicts as it sees fit). */
export async function requestPersist(): Promise<boolean> {
  const s = (globalThis.navigator as Navigator | undefined)?.storage;
  return s?.persist ? await s.persist() : false;
}

export function isQuotaError(err: unknown): boolean {
  const e = err as { name?: string; message?: string } | null;
  return e?.name === "QuotaExceededError" || /quota/i.test(String(e?.message ?? ""));
}

const mb = (n: number) => `${(n / 2 ** 20).toFixed(n < 10 * 2 ** 20 ? 1 : 0)} MB`;

/**
 * The `storage-quota` error for a model that did not fit: how much it needed, what the origin uses, and the cached
 * models that could be deleted to make room (largest first), named as chat.cache.delete() takes them.
 */
export async function quotaError(modelId: string, neededBytes: number | null, excludeUrl?: string): Promise<EngineError> {
  const info = await storageInfo();
  const others = (await listCached().catch(() => [])).filter((m) => m.url !== excludeUrl && m.kind !== "blobs");
  const names = others.slice(0, 5).map((m) => `${m.id} (${mb(m.bytes)})`);
  const use = info.usage !== null ? ` This page's storage holds ${mb(info.usage)}${info.quota ? ` of ${mb(info.quota)} allowed` : ""}.` : "";
  const advice = names.length
    ? ` Delete cached models you no longer need: ${names.join(", ")}, with chat.cache.delete("<name>") or the ` +
      "widget's Storage panel, or free disk space; then load the model again."
    : " Nothing else is cached here to delete: free disk space (the browser sizes the quota by it), then load again.";
  return new EngineError("storage-quota",
    `Not enough browser storage to cache ${modelId}${neededBytes ? ` (${mb(neededBytes)} still to store)` : ""}: the quota is full. ` +
      `Nothing of it was kept.${use}${advice}`,
    { needed_bytes: neededBytes, usage: info.usage, quota: info.quota,
      cached: others.map((m) => ({ id: m.id, bytes: m.bytes, url: m.url })) });
}
