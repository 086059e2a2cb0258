// Makes a local model folder visible to web-llm without a server: each file is put into the Cache Storage
// cache web-llm reads (webllm/config, webllm/wasm, webllm/model) under the synthetic URL its model record
// names. web-llm looks in its cache before fetching, so it never goes to the network for these URLs.
import { deleteGroup, isQuotaError, quotaError, recordModel } from "./model_cache";
import { EngineError, type BlobSource, type ModelFile, type ModelSpec, type VerifiedBytes } from "./types";

/** A host name that can never resolve (RFC 6761), so a missed cache entry fails fast instead of leaking a request. */
export const SYNTHETIC_ORIGIN = "https://webllm-widget.invalid";

export function baseUrlFor(spec: ModelSpec): string {
  if (!spec.key) throw new EngineError("bad-model", `model ${spec.id} has files but no key (manifest hash)`);
  // web-llm appends resolve/main/ unless the URL already has it (Hugging Face layout).
  return `${SYNTHETIC_ORIGIN}/m/${spec.key}/resolve/main/`;
}

/** The web-llm model record for a spec, or null for an MLC prebuilt id (web-llm knows those). */
export function recordFor(spec: ModelSpec): Record<string, unknown> | null {
  if (spec.prebuilt) return null;
  const extra: Record<string, unknown> = {};
  if (spec.overrides) extra.overrides = spec.overrides;
  if (spec.required_features) extra.required_features = spec.required_features;
  if (spec.files) {
    if (!spec.lib) throw new EngineError("bad-model", `model ${spec.id} names no library (.wasm)`);
    const base = baseUrlFor(spec);
    return { model: base, model_id: spec.id, model_lib: base + spec.lib, ...extra };
  }
  if (spec.url && spec.lib_url) return { model: spec.url, model_id: spec.id, model_lib: spec.lib_url, ...extra };
  throw new EngineError("bad-model", `model ${spec.id}: give files, a url with lib_url, or a prebuilt id`);
}

export function scopeFor(spec: ModelSpec, file: ModelFile): string {
  if (file.name === "mlc-chat-config.json") return "webllm/config";
  if (file.name === spec.lib) return "webllm/wasm";
  return "webllm/model";
}

async function sha256Hex(data: ArrayBuffer | Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", data as BufferSource);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function isVerified(x: unknown): x is VerifiedBytes {
  return typeof x === "object" && x !== null && (x as VerifiedBytes).verified instanceof Uint8Array;
}

export interface InstallProgress {
  bytes_done: number;
  bytes_total: number;
  files_done: number;
  files_total: number;
  file: string;
}

/** Names of the files web-llm would still have to fetch. */
export async function missingFiles(spec: ModelSpec): Promise<ModelFile[]> {
  const base = baseUrlFor(spec);
  const missing: ModelFile[] = [];
  const damaged: string[] = [];
  for (const f of spec.files ?? []) {
    const cache = await caches.open(scopeFor(spec, f));
    const hit = await cache.match(base + f.name);
    if (!hit) missing.push(f);
    else if (!(await verifyCached(cache, base + f.name, hit, f))) damaged.push(f.name);
  }
  if (damaged.length) {
    throw new EngineError(
      "bad-artifact",
      `model file${damaged.length > 1 ? "s" : ""} ${damaged.join(", ")}: the copy in this page's cache is damaged ` +
        "(size or sha256 differs from the model folder). It was removed from the cache: load the model again to " +
        "fetch a good copy.",
      { files: damaged, file: damaged[0] },
    );
  }
  return missing;
}

// Cache entries already checked in this page (a second load of the same folder does not hash it again).
const verified = new Set<string>();

/**
 * A copy in Cache Storage is checked against its sha256 before web-llm reads it: storage can be damaged
 * or written by other code. A bad copy is removed (so the next load fetches a good one); returns false then.
 */
async function verifyCached(cache: Cache, url: string, hit: Response, f: ModelFile): Promise<boolean> {
  const key = `${url}#${f.sha256}`;
  if (verified.has(key)) return true;
  const bytes = new Uint8Array(await hit.arrayBuffer());
  if (bytes.byteLength !== f.size || (await sha256Hex(bytes)) !== f.sha256) {
    await cache.delete(url);
    await evictBlob(f.sha256);
    return false;
  }
  verified.add(key);
  return true;
}

/** Drop a blob from the page's content-addressed store too (loader.ts keeps one per sha256). */
async function evictBlob(sha256: string): Promise<void> {
  try {
    const blobs = await caches.open("webllm-widget/blobs");
    await blobs.delete(`https://webllm-widget.invalid/blobs/${sha256}`);
  } catch {
    /* no Cache Storage: nothing to evict */
  }
  const mem = (globalThis as unknown as { __webllmWidgetBlobs?: { bytes: Map<string, unknown> } }).__webllmWidgetBlobs;
  mem?.bytes.delete(sha256);
}

/**
 * Puts every file of `spec` that web-llm's caches lack, asking `source` for its bytes.
 * Returns the number of bytes installed (0 when the page already held the whole folder).
 */
export async function installModelFiles(
  spec: ModelSpec,
  source: BlobSource,
  onProgress?: (p: InstallProgress) => void,
): Promise<number> {
  const base = baseUrlFor(spec);
  const missing = await missingFiles(spec);
  const bytes_total = missing.reduce((n, f) => n + f.size, 0);
  let bytes_done = 0;
  let files_done = 0;
  for (const f of missing) {
    const got = await source(f, (received) =>
      onProgress?.({ bytes_done: bytes_done + received, bytes_total, files_done, files_total: missing.length, file: f.name }),
    );
    let response: Response;
    if (got instanceof Response) {
      response = got; // from a content-addressed store that checked the hash when it stored the blob
    } else {
      const checked = isVerified(got); // the source hashed these bytes already: only the size is checked here
      const bytes = checked ? got.verified : got instanceof Blob ? new Uint8Array(await got.arrayBuffer())
        : got instanceof Uint8Array ? got : new Uint8Array(got as ArrayBuffer);
      if (bytes.byteLength !== f.size || (!checked && (await sha256Hex(bytes)) !== f.sha256)) {
        await evictBlob(f.sha256);
        throw new EngineError("bad-artifact", `model file ${f.name} arrived damaged (size or sha256 mismatch); rebuild or resend the model folder`, { file: f.name, sha256: f.sha256 });
      }
      response = new Response(bytes as BodyInit, { headers: { "content-length": String(f.size) } });
    }
    const cache = await caches.open(scopeFor(spec, f));
    try {
      await cache.put(base + f.name, response);
    } catch (err) {
      if (!isQuotaError(err)) throw err;
      // The origin's storage is full: a model cached in part would look cached to nobody and take space, so
      // every file of it goes, and the error names what could be deleted instead.
      await deleteGroup(base);
      throw await quotaError(spec.id, bytes_total - bytes_done, base);
    }
    verified.add(`${base + f.name}#${f.sha256}`);
    bytes_done += f.size;
    files_done += 1;
    onProgress?.({ bytes_done, bytes_total, files_done, files_total: missing.length, file: f.name });
  }
  await recordModel({ id: spec.id, url: base, key: spec.key, kind: "folder" });
  return bytes_done;
}
