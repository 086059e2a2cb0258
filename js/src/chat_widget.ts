// anywidget entry of webllm_widget.Chat: connects the widget model (traitlets + custom messages) to the
// page's shared engine (engine/host.ts) and to the chat view (ui/chat_view.ts).
//
// Kernel -> page: load {engine, model}, ask {messages, settings, user}, stop, call {fn: "reset"}.
// Page -> kernel: ready, progress, token, done, result, error. Tokens travel as messages; the kernel
// writes the `messages` and `stats` traitlets when an answer completes (a running cell gets messages,
// not traitlet updates). A turn typed in the page is reported with `done` {origin: "page", user}.
import type { AnyModel } from "@anywidget/types";
import { PageChannel, PageError, describeError, errorMessage, newId, type Envelope } from "./protocol";
import { BlobLoader } from "./loader";
import { sharedEngine, specKey, type SwapEvent, type WorkerEngine } from "./engine/host";
import { cpuBuildLabel } from "./engine/cpu/features";
import type { ChatMessage, GenerateSettings, LoadProgress, ModelSpec } from "./engine/types";
import type { Ask, ChatCall, ChatLoad, ErrorMessage, PageErrorCode } from "./wire/schema.gen";
import { ChatView, type ModelEntry, type Msg, type StorageView, type ViewState } from "./ui/chat_view";
import { deleteCached, listCached, requestPersist, storageInfo, type CachedModel } from "./engine/model_cache";
import { describeEntry, pageAdapter, type PickerEntry } from "./ui/model_facts";
import { TokenProbsView } from "./ui/token_probs";
import type { TokenLogprob } from "./engine/logprobs";

/** Page-side state of one Chat model, shared by all its views. */
class ChatState {
  status = "idle";
  progress: LoadProgress | null = null;
  pending: Msg[] = [];
  // Index in `messages` the pending turn replaces from (regenerate / edit-and-resend drop what follows it)
  base: number | null = null;
  // messages.length the kernel's traitlet will reach once it has recorded the pending turn
  pendingUntil = -1;
  live: { tokens: number; tok_s: number; t0: number } | null = null;
  stats: Record<string, number | string | null> | null = null;
  gpu = "";
  error: { code: string; message: string } | null = null;
  engine: WorkerEngine | null = null;
  /** The model this Chat loaded: every request it makes names it (the page may hold several models). */
  spec: ModelSpec | null = null;
  /** A line about the page's models (this one unloaded to make room for another, or loaded again). */
  notice: string | null = null;
  offSwap: (() => void) | null = null;
  /** The last answer's token log-probabilities (when `show_token_probs` is on). */
  tokenProbs: TokenLogprob[] | null = null;
  abort: AbortController | null = null;
  // The kernel behind this model restarted or shut down (see onDisconnect in initialize()).
  disconnected = false;
  /** The model picker's entries with what this page adds (cached, fit), by id. */
  facts = new Map<string, ModelEntry>();
  /** The picker was opened: prebuilt models may be looked up where they are fetched from. */
  pickerOpened = false;
  refreshFacts: () => void = () => undefined;
  channel: PageChannel | null = null;
  /** The Storage panel's content, once it was opened (or the kernel asked). */
  storage: StorageView | null = null;
  /** Lists what is cached (and the origin's estimate) into `storage`; returns it. */
  async refreshStorage(message?: string): Promise<StorageView> {
    const [models, info] = await Promise.all([listCached(), storageInfo()]);
    this.storage = { models: models.map((m) => ({ id: m.id, url: m.url, kind: m.kind, bytes: m.bytes, files: m.files })), ...info, message };
    this.changed();
    return this.storage;
  }
  private listeners = new Set<() => void>();
  subscribe(fn: () => void) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
  changed() {
    this.listeners.forEach((f) => f());
  }
}

// anywidget hands initialize() and each render() a different proxy of the same model, so page state is keyed
// by a per-widget id the kernel sets (`_page_key`), not by the model object.
const states = new Map<string, ChatState>();
const keyOf = (model: AnyModel) => String(model.get("_page_key") ?? "");

function gpuLabel(g: { vendor: string; architecture: string; description: string; is_fallback: boolean }): string {
  const name = g.description || [g.vendor, g.architecture].filter(Boolean).join(" ") || "unknown adapter";
  return g.is_fallback ? `${name} (software)` : name;
}

/** Traitlets the view shows: the settings form's, and the batch progress. */
const SETTING_TRAITS = ["system_prompt", "temperature", "top_p", "max_tokens", "seed", "batch_progress"] as const;

/** The `batch_progress` traitlet ({done, total} while Chat.batch runs, {} otherwise) as the view wants it. */
function batchOf(v: unknown): { done: number; total: number } | null {
  const b = v as { done?: unknown; total?: unknown } | null;
  return b && typeof b.total === "number" && b.total > 0 ? { done: Number(b.done ?? 0), total: b.total } : null;
}

const numOrNull = (v: unknown): number | null => (typeof v === "number" && isFinite(v) ? v : null);

/** Alternatives shown per token in the token probabilities view (the kernel asks for as many). */
const TOKEN_PROBS_TOP = 5;

function settingsFrom(model: AnyModel): GenerateSettings {
  const s: GenerateSettings = {};
  const num = (k: string) => {
    const v = model.get(k);
    return typeof v === "number" && isFinite(v) ? v : undefined;
  };
  s.temperature = num("temperature");
  s.top_p = num("top_p");
  s.max_tokens = num("max_tokens");
  s.seed = num("seed");
  s.frequency_penalty = num("frequency_penalty");
  s.presence_penalty = num("presence_penalty");
  s.repetition_penalty = num("repetition_penalty");
  if (model.get("show_token_probs")) {
    s.logprobs = true;
    s.top_logprobs = TOKEN_PROBS_TOP;
  }
  const stop = model.get("stop_sequences");
  if (Array.isArray(stop) && stop.length) s.stop = stop.map(String);
  for (const k of Object.keys(s) as (keyof GenerateSettings)[]) if (s[k] === undefined) delete s[k];
  return s;
}

function initialize({ model }: { model: AnyModel }) {
  const state = new ChatState();
  states.set(keyOf(model), state);
  const channel = new PageChannel(model);
  state.channel = channel;
  const loader = new BlobLoader(channel);

  const fail = (req: Envelope | string | undefined, err: unknown, fallback: PageErrorCode = "error") => {
    state.error = describeError(err, fallback);
    state.changed();
    channel.replyError(req, err, fallback);
  };

  channel.on("load", async (raw) => {
    const msg = raw as Envelope & ChatLoad;
    const engineRef = msg.engine;
    const m: ModelSpec = msg.model;
    state.status = "loading";
    state.error = null;
    state.progress = { progress: 0, phase: "install", elapsed_s: 0, text: "starting the engine" };
    state.changed();
    let last = 0;
    const onProgress = (p: LoadProgress) => {
      state.progress = p;
      state.changed();
      const now = performance.now();
      if (p.progress < 1 && now - last < 250) return; // the kernel needs a few updates a second, not hundreds
      last = now;
      channel.reply(msg, "progress", { ...p });
    };
    try {
      const t0 = performance.now();
      const engine = await sharedEngine(async () => {
        const bytes = await loader.get(engineRef, (ref, received, cached) => {
          if (cached) return;
          const elapsed_s = (performance.now() - t0) / 1000;
          const frac = received / Math.max(1, ref.size);
          onProgress({
            progress: frac, phase: "install", bytes_done: received, bytes_total: ref.size, elapsed_s,
            eta_s: frac > 0 ? (elapsed_s * (1 - frac)) / frac : undefined, text: "copying the engine into the page",
          });
        });
        return new Blob([bytes as unknown as BlobPart], { type: "text/javascript" });
      });
      state.engine = engine;
      if (typeof msg.memory_budget === "number") engine.setMemoryBudget(msg.memory_budget);
      state.offSwap?.();
      // Another Chat's load may unload this one's model: say so here and tell the kernel (progress, no id).
      state.offSwap = engine.onSwap((e: SwapEvent) => {
        const mine = state.spec ? specKey(state.spec) : null;
        if (!mine || !e.unloaded.some((u) => u.key === mine)) return;
        state.notice = `${e.text.replace(/^unloaded /, "This chat's model was unloaded: ")}.`;
        state.changed();
        if (!state.disconnected) channel.send("progress", { phase: "unloaded", progress: 0, elapsed_s: 0, text: e.text, swap: e });
      });
      const spec = m;
      state.spec = spec;
      state.notice = null;
      const byName = new Map([...(m.files ?? []), ...(m.cpu?.files ?? []), ...(m.webgpu_fallback?.files ?? [])].map((f) => [f.sha256, f]));
      // loader.get checks each file's sha256 as it arrives: say so, so the engine does not hash it again
      const r = await engine.load(spec, onProgress, async (f, onBytes) => ({
        verified: await loader.get(byName.get(f.sha256) ?? { ...f }, (_ref, received) => onBytes?.(received), { store: false }),
      }));
      state.gpu = r.device === "cpu" ? `CPU (${cpuBuildLabel(r.cpu_build)}) — ${r.device_reason ?? ""}`
        : gpuLabel(r.gpu) + (r.schedule === "fallback" ? " — kernels for software adapters" : "");
      state.status = "ready";
      state.progress = null;
      state.changed();
      state.refreshFacts(); // its files are cached now
      channel.reply(msg, "result", { model: r.model, gpu: r.gpu, load_s: r.load_s, bytes_installed: r.bytes_installed,
        device: r.device ?? "webgpu", device_reason: r.device_reason ?? "", schedule: r.schedule ?? null,
        ...(r.dispatch ? { dispatch: r.dispatch } : {}), ...(r.shaders ? { shaders: r.shaders } : {}), ...(r.cpu_build ? { cpu_build: r.cpu_build } : {}) });
    } catch (err) {
      state.status = "error";
      state.progress = null;
      fail(msg, err, "bad-artifact");
    }
  });

  /** Run one generation; `origin` says who asked (the kernel's ask, or text typed in this page). */
  async function generate(id: string, messages: ChatMessage[], settings: GenerateSettings, user: string, origin: "kernel" | "page", record = true, base: number | null = null) {
    const engine = state.engine;
    if (state.status === "generating") {
      throw new PageError("busy", "An answer is being generated: wait for it or press Stop, then ask again.");
    }
    if (!engine || state.status !== "ready") {
      throw new PageError("bad-model", state.status === "loading" ? "The model is still loading: wait for it, then ask again." : "No model is loaded: call chat.load(...) or pick one.");
    }
    state.status = "generating";
    state.error = null;
    const confirmed = (model.get("messages") as Msg[]) ?? [];
    state.pending = [{ role: "user", content: user }, { role: "assistant", content: "" }];
    state.base = base;
    state.pendingUntil = (base ?? confirmed.length) + 2;
    state.live = { tokens: 0, tok_s: 0, t0: 0 };
    state.abort = new AbortController();
    state.changed();
    let raf = 0;
    // The page unloaded this Chat's model to make room for another: the engine loads it again first.
    const onSwapProgress = (p: LoadProgress) => {
      state.status = p.phase === "done" ? "generating" : "swapping";
      state.progress = p.phase === "done" ? null : p;
      state.notice = p.phase === "done" ? `${p.text} (it had been unloaded to make room for another model)` : p.text;
      state.changed();
      if (origin === "kernel" && !state.disconnected) channel.reply(id, "progress", { ...p, swap: true });
    };
    try {
      const r = await engine.generate(messages, settings, (delta) => {
        const live = state.live!;
        live.tokens += 1;
        const now = performance.now();
        if (live.tokens === 1) live.t0 = now;
        else live.tok_s = ((live.tokens - 1) * 1000) / Math.max(1, now - live.t0);
        state.pending[1].content += delta;
        if (origin === "kernel" && !state.disconnected) channel.reply(id, "token", { text: delta });
        if (!raf) raf = requestAnimationFrame(() => ((raf = 0), state.changed()));
      }, state.abort.signal, state.spec ?? undefined, onSwapProgress);
      state.pending[1].content = r.text;
      state.tokenProbs = r.choices?.[0]?.logprobs?.content ?? null;
      state.stats = { ...r.usage, finish_reason: r.finish_reason };
      // After a kernel restart nobody listens (the comm is gone): the partial answer stays on screen.
      if (!state.disconnected) {
        channel.reply(id, "done", { text: r.text, finish_reason: r.finish_reason, usage: r.usage, origin, user,
          ...(r.choices && (r.choices.length > 1 || r.choices[0]?.logprobs) ? { choices: r.choices } : {}),
          model: r.model ?? null, reloaded: r.reloaded ?? null, ...(base !== null ? { base } : {}) });
        // Written only by the page, after the kernel was told: a host that runs code again when the page
        // changes a widget's state (marimo's mo.ui.anywidget) re-runs the cells that read the chat then.
        model.set("answered", (Number(model.get("answered")) || 0) + 1);
        model.save_changes();
      }
    } finally {
      if (raf) cancelAnimationFrame(raf);
      state.status = "ready";
      state.live = null;
      state.abort = null;
      // Until the kernel records the turn in `messages`, keep showing it from here.
      if (!record || (((model.get("messages") as Msg[]) ?? []).length) >= state.pendingUntil) {
        state.pending = [];
        state.base = null;
      }
      state.changed();
    }
  }

  channel.on("ask", async (raw) => {
    const msg = raw as Envelope & Ask;
    // Receipt first: the kernel fails an ask that no view acknowledges (a host that delivers a later cell's
    // messages only to the newest output, as Colab does, never hands it to this view).
    channel.reply(String(msg.id), "progress", { phase: "received" });
    try {
      // the engine checks response_format's shape (the wire carries it as an object)
      await generate(String(msg.id), msg.messages, (msg.settings ?? {}) as GenerateSettings, String(msg.user ?? ""), "kernel", msg.record !== false);
    } catch (err) {
      if (state.disconnected) return; // the kernel is gone: keep what is shown, there is no one to tell
      state.pending = [];
      fail(msg, err);
    }
  });

  channel.on("stop", () => {
    state.abort?.abort();
  });

  channel.on("call", async (raw) => {
    const msg = raw as Envelope & ChatCall;
    try {
      if (msg.fn === "reset") {
        state.abort?.abort();
        state.pending = [];
        state.stats = null;
        state.error = null;
        await state.engine?.reset(state.spec ?? undefined);
        state.changed();
        channel.reply(msg, "result", {});
      } else if (msg.fn === "cache") {
        // The kernel's chat.cache: list, delete (targets or all), persist.
        let deleted: CachedModel[] = [];
        let persisted: boolean | null = null;
        if (msg.op === "delete") {
          deleted = await deleteCached(msg.all ? "all" : ((msg.targets as string[]) ?? []).map(String));
          state.refreshFacts(); // the picker's "cached" changes
        } else if (msg.op === "persist") {
          persisted = await requestPersist();
        } else if (msg.op !== "list") {
          throw new PageError("error", `unknown cache operation ${String(msg.op)}`);
        }
        const st = await state.refreshStorage();
        channel.reply(msg, "result", { models: await listCached(), usage: st.usage, quota: st.quota,
          persisted: st.persisted, deleted, ...(persisted !== null ? { granted: persisted } : {}) });
      } else {
        throw new PageError("error", `unknown call ${String(msg.fn)}`);
      }
    } catch (err) {
      fail(msg, err);
    }
  });

  // A notice from the kernel (no id): show it.
  channel.on("error", (raw) => {
    const msg = raw as Envelope & ErrorMessage;
    if (msg.id) return;
    state.error = { code: String(msg.code ?? "error"), message: String(msg.message ?? "") };
    state.changed();
  });

  const onMessages = () => {
    const n = ((model.get("messages") as Msg[]) ?? []).length;
    if (state.status !== "generating" && state.pending.length && n >= state.pendingUntil) state.pending = [];
    if (n === 0 && state.status !== "generating") state.pending = [];
    if (!state.pending.length) state.base = null;
    state.changed();
  };
  model.on("change:messages", onMessages);
  // Kernel restart: the widget manager sets comm_live to false on every model, and that is the only change of
  // comm_live after a model is made (closing the widget ends the same way). The Python object is gone: keep the
  // conversation on screen, refuse input, say what to do, and stop an answer still being generated so the page's
  // engine (still loaded; the next Chat() reuses it without copying anything) is free.
  const onDisconnect = () => {
    if (state.disconnected) return;
    state.disconnected = true;
    state.abort?.abort();
    state.changed();
  };
  model.on("comm_live_update", onDisconnect);
  const onAny = () => state.changed();
  // What the picker shows of each model: the kernel's facts, plus cached and fit as this page sees them.
  let factsRound = 0;
  state.refreshFacts = () => {
    const round = ++factsRound;
    const entries = (model.get("models") as PickerEntry[]) ?? [];
    const device = String(model.get("device") ?? "auto");
    void (async () => {
      const gpu = await pageAdapter();
      const described = await Promise.all(entries.map((e) =>
        describeEntry(e, device, gpu, state.pickerOpened).catch((err) => ({ id: e.id, label: e.label, why: String(err) } as ModelEntry))));
      if (round !== factsRound) return; // a newer round started
      state.facts = new Map(described.map((d) => [d.id, d]));
      state.changed();
    })();
  };
  const onModels = () => {
    state.refreshFacts();
    state.changed();
  };
  state.refreshFacts();
  model.on("change:model", onAny);
  model.on("change:models", onModels);
  model.on("change:gpu", onAny);
  model.on("change:device", onModels);
  for (const k of SETTING_TRAITS) model.on(`change:${k}`, onAny);

  /** Text typed in this page: generated here, reported to the kernel with `done` {origin: "page"}. With `base`,
   * the turn replaces `messages[base:]` (regenerate, edit-and-resend): the kernel records it there. */
  const sendFromPage = async (text: string, base: number | null = null) => {
    const sys = String(model.get("system_prompt") ?? "");
    const all = (model.get("messages") as Msg[]) ?? [];
    const history = all.slice(0, base ?? all.length).filter((m) => m.role !== "system");
    const messages: ChatMessage[] = [...(sys ? [{ role: "system" as const, content: sys }] : []), ...history, { role: "user", content: text }];
    try {
      await generate(newId("u"), messages, settingsFrom(model), text, "page", true, base);
    } catch (err) {
      state.pending = [];
      const e = errorMessage(err);
      state.error = e;
      state.changed();
      channel.send("error", { ...e, origin: "page" });
    }
  };
  (state as unknown as { send: (t: string, base?: number | null) => void }).send = (t, base = null) => void sendFromPage(t, base);

  channel.ready({ widget: "chat", secure: window.isSecureContext, webgpu: "gpu" in navigator });

  return () => {
    model.off("change:messages", onMessages);
    model.off("change:model", onAny);
    model.off("change:models", onModels);
    model.off("change:gpu", onAny);
    model.off("change:device", onModels);
    for (const k of SETTING_TRAITS) model.off(`change:${k}`, onAny);
    model.off("comm_live_update", onDisconnect);
    state.abort?.abort();
    state.offSwap?.();
    channel.close();
    states.delete(keyOf(model));
  };
}

function render({ model, el }: { model: AnyModel; el: HTMLElement }) {
  const state = states.get(keyOf(model));
  if (!state) {
    el.textContent = "webllm-widget: the Chat widget did not initialize; re-run the cell.";
    return;
  }
  const send = (text: string, base: number | null = null) =>
    (state as unknown as { send: (t: string, base: number | null) => void }).send(text, base);
  const view = new ChatView(el, {
    send: (text) => send(text),
    regenerate: () => {
      const msgs = (model.get("messages") as Msg[]) ?? [];
      let i = msgs.length - 1;
      while (i >= 0 && msgs[i].role !== "user") i--;
      if (i >= 0) send(msgs[i].content, i);
    },
    edit: (index, text) => {
      const msgs = (model.get("messages") as Msg[]) ?? [];
      if (msgs[index]?.role === "user") send(text, index);
    },
    setSetting: (name, value) => {
      model.set(name, name === "system_prompt" ? String(value ?? "") : value);
      model.save_changes();
    },
    stop: () => state.abort?.abort(),
    pickModel: (id) => {
      model.set("model", id);
      model.save_changes();
    },
    storageOpened: () => void state.refreshStorage(),
    deleteCached: (target) => {
      if (state.storage) state.storage = { ...state.storage, busy: true };
      state.changed();
      void (async () => {
        const gone = await deleteCached(target === "all" ? "all" : [target]).catch(() => []);
        state.refreshFacts();
        await state.refreshStorage(gone.length ? `Deleted ${gone.map((m) => m.id).join(", ")}.` : "Nothing was deleted.");
      })();
    },
    persist: () => {
      void (async () => {
        const granted = await requestPersist().catch(() => false);
        await state.refreshStorage(granted ? "The browser will keep these models." :
          "The browser did not grant persistent storage (it decides by how the site is used); models may be evicted under storage pressure.");
      })();
    },
    pickerOpened: () => {
      if (state.pickerOpened) return;
      state.pickerOpened = true;
      state.refreshFacts(); // now prebuilt models may be looked up where they are fetched from
      // and the kernel describes the built-in model when this chat runs another one
      if (!state.disconnected) state.channel?.send("call", { fn: "describe-models" });
    },
    pickDevice: (device) => {
      model.set("device", device); // the kernel reloads the model for the new device
      model.save_changes();
    },
    reset: () => {
      // The kernel owns the conversation: ask it to clear (it also resets the engine's KV cache).
      state.channel?.send("call", { fn: "reset-request" });
    },
  });
  const probs = new TokenProbsView(el);
  const draw = () => {
    const vs: ViewState = {
      status: state.disconnected ? "disconnected" : state.status === "idle" && state.error ? "error" : state.status,
      model: String(model.get("model") ?? ""),
      models: ((model.get("models") as PickerEntry[]) ?? []).map((e) => state.facts.get(e.id) ?? { id: e.id, label: e.label }),
      progress: state.progress,
      notice: state.notice,
      messages: (model.get("messages") as Msg[]) ?? [],
      base: state.pending.length && state.base !== null ? state.base : undefined,
      pending: state.pending,
      settings: {
        system_prompt: String(model.get("system_prompt") ?? ""),
        temperature: numOrNull(model.get("temperature")),
        top_p: numOrNull(model.get("top_p")),
        max_tokens: numOrNull(model.get("max_tokens")),
        seed: numOrNull(model.get("seed")),
      },
      batch: batchOf(model.get("batch_progress")),
      storage: state.storage,
      live: state.live ? { tokens: state.live.tokens, tok_s: state.live.tok_s } : null,
      stats: state.stats ?? ((model.get("stats") as Record<string, number>) || null),
      gpu: state.gpu || String(model.get("gpu") ?? ""),
      device: String(model.get("device") ?? "auto"),
      error: state.disconnected ? { code: "kernel-disconnected", message: "The kernel restarted or stopped: this " +
        "chat's Python object is gone. Run its cell again to chat; the model stays loaded in this page." } : state.error,
    };
    view.update(vs);
    probs.update(state.tokenProbs, Boolean(model.get("show_token_probs")));
  };
  draw();
  const off = state.subscribe(draw);
  model.on("change:show_token_probs", draw);
  return () => {
    off();
    model.off("change:show_token_probs", draw);
  };
}

export default { initialize, render };
