"""A host page that reproduces Colab's conditions for widgets (no Google code): every output is its own iframe
on its own loopback origin, the widget manager runs inside that frame, comm messages are relayed between the
frames and the kernel by ``postMessage`` through the top page, there is no Jupyter server (so no HTTP route:
the comm carries everything), and messages the kernel sends reach only the newest output (as reported for
Colab in googlecolab/colabtools#498: a later cell's messages never reach a view shown by an earlier cell).

Outputs live at ``http://out-<n>.localhost:<port>/output.html``: Chromium resolves ``*.localhost`` to loopback
and treats it as a secure context, and each ``out-<n>`` is a separate origin, so Cache Storage is partitioned
per output. The kernel side is :class:`~browser.WidgetHost`'s (real widgets, real traitlets and channel):

    with FrameHost(host_server, chromium) as host:
        host.new_cell()                      # the next outputs go into a new output frame
        chat = host.run(make_chat())         # its comm opens in that frame
        host.new_cell(); host.display(chat)  # a later cell shows the same widget again (a new view, new origin)
"""
from __future__ import annotations

import asyncio
from typing import Any

from browser import FRAME_CODEC_JS, WidgetHost

# Top page: the "notebook front end". Keeps the kernel's WebSocket, one iframe per cell output, and relays.
FRAMES_HTML = """<!doctype html><meta charset="utf-8"><title>webllm-widget frame host</title>
<body><div id="cells"></div><script type="module">
const enc = new TextEncoder(), dec = new TextDecoder();
const ws = new WebSocket(`ws://${location.host}/comm`);
ws.binaryType = "arraybuffer";
const frames = [];        // {n, win, origin, ready, queue}
let newest = null;
window.__host = { errors: [], frames: 0, relayed_to_kernel: 0 };
""" + FRAME_CODEC_JS + """function newCell() {
  const n = frames.length + 1;
  const origin = `http://out-${n}.localhost:${location.port}`;
  const iframe = document.createElement("iframe");
  iframe.id = `out-${n}`;
  iframe.style.cssText = "width: 900px; height: 500px; border: 1px solid #ccc; display: block";
  iframe.src = `${origin}/output.html`;
  document.getElementById("cells").append(iframe);
  const f = { n, win: iframe.contentWindow, origin, ready: false, queue: [] };
  frames.push(f);
  newest = f;
  window.__host.frames = frames.length;
}
function deliver(f, header, buffers) {
  if (!f) return;
  if (!f.ready) { f.queue.push([header, buffers]); return; }
  f.win.postMessage({ wlw: "to-frame", header, buffers }, f.origin, buffers);
}
ws.onmessage = (ev) => {
  const [h, buffers] = unpack(ev.data);
  if (h.type === "cell") newCell();
  else if (h.type === "comm_open" || h.type === "display") deliver(newest, { ...h, type: "comm_open" }, buffers);
  else if (h.type === "comm_msg") deliver(newest, h, buffers);          // only the newest output hears the kernel
  else if (h.type === "comm_close") for (const f of frames) deliver(f, h, []);
};
window.addEventListener("message", (ev) => {
  const f = frames.find(x => x.win === ev.source);
  if (!f || ev.origin !== f.origin || !ev.data || !ev.data.wlw) return;
  if (ev.data.wlw === "frame-ready") {
    f.ready = true;
    for (const [h, b] of f.queue.splice(0)) deliver(f, h, b);
  } else if (ev.data.wlw === "to-kernel") {
    window.__host.relayed_to_kernel += 1;
    ws.send(pack(ev.data.header, ev.data.buffers));
  }
});
ws.onopen = () => ws.send(pack({ type: "hello" }, []));
</script>"""

# One output: the widget manager of anywidget's front-end contract, talking to the top page by postMessage.
OUTPUT_HTML = """<!doctype html><meta charset="utf-8"><title>output</title>
<body><div id="widgets"></div><script type="module">
const models = new Map();
window.__frame = { errors: [], opened: 0, dropped: 0, received: 0 };
const own = (b) => {  // a transferable copy of what a widget hands to model.send
  const v = b instanceof ArrayBuffer ? new Uint8Array(b) : new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  return v.slice().buffer;
};
function toKernel(header, buffers) { parent.postMessage({ wlw: "to-kernel", header, buffers }, "*", buffers); }
function makeModel(commId, state) {
  const listeners = new Map();
  const emit = (name, ...args) => (listeners.get(name) || []).slice().forEach(f => f(...args));
  let dirty = {};
  return {
    _state: state, _emit: emit,
    get: k => state[k],
    set: (k, v) => { state[k] = v; dirty[k] = v; emit(`change:${k}`); emit("change"); },
    save_changes: () => { const s = dirty; dirty = {};
      toKernel({ type: "comm_msg", comm_id: commId, data: { method: "update", state: s, buffer_paths: [] } }, []); },
    on: (name, f) => { if (!listeners.has(name)) listeners.set(name, []); listeners.get(name).push(f); },
    off: (name, f) => { if (!name) { listeners.clear(); return; }
      listeners.set(name, f ? (listeners.get(name) || []).filter(g => g !== f) : []); },
    send: (content, callbacks, buffers) => toKernel(
      { type: "comm_msg", comm_id: commId, data: { method: "custom", content } }, (buffers || []).map(own)),
    widget_manager: { get_model: async id => models.get(id) },
  };
}
async function open(commId, data) {
  const state = data.state;
  const model = makeModel(commId, state);
  models.set(commId, model);
  if (typeof state._esm !== "string") return;
  const url = URL.createObjectURL(new Blob([state._esm], { type: "text/javascript" }));
  let def = (await import(url)).default;
  if (typeof def === "function") def = await def();
  const signal = new AbortController().signal;
  await def.initialize?.({ model, signal, experimental: {} });
  const el = document.createElement("div");
  el.id = `widget-${commId}`;
  el.className = "widget";
  document.getElementById("widgets").append(el);
  await def.render?.({ model, el, signal, experimental: {} });
  window.__frame.opened += 1;
}
window.addEventListener("message", async (ev) => {
  if (ev.source !== parent || !ev.data || ev.data.wlw !== "to-frame") return;
  const h = ev.data.header, buffers = ev.data.buffers.map(b => new DataView(b));
  window.__frame.received += 1;
  try {
    if (h.type === "comm_open") await open(h.comm_id, h.data);
    else if (h.type === "comm_msg") {
      const m = models.get(h.comm_id);
      if (!m) { window.__frame.dropped += 1; return; }  // a message for a view shown by another output
      if (h.data.method === "update") {
        Object.assign(m._state, h.data.state);
        for (const k of Object.keys(h.data.state)) m._emit(`change:${k}`);
      } else if (h.data.method === "custom") m._emit("msg:custom", h.data.content, buffers);
    } else if (h.type === "comm_close") models.delete(h.comm_id);
  } catch (e) { window.__frame.errors.push(String(e && e.stack || e)); console.error(e); }
});
parent.postMessage({ wlw: "frame-ready" }, "*");
</script>"""


class FrameHost(WidgetHost):
    """:class:`WidgetHost` with Colab's frame layout: outputs in cross-origin iframes, newest output only."""

    def __init__(self, server: Any, browser: Any):
        super().__init__(server, browser)
        server.add_route("/frames.html", FRAMES_HTML.encode(), "text/html")
        server.add_route("/output.html", OUTPUT_HTML.encode(), "text/html")

    def open_page(self) -> Any:
        if self.page is not None:
            self.page.close()
        self._socket = None
        self.page = self.browser.new_page()
        self.page.goto(self.server.origin + "/frames.html")
        self.page.wait_for_function("() => window.__host !== undefined")
        return self.page

    def new_cell(self) -> None:
        """A new cell runs: what the kernel shows or sends from now on goes to its new output frame."""
        self.server.call(lambda: self._emit({"type": "cell"}, []))

    def display(self, widget: Any) -> None:
        """Show an existing widget again in the newest output (a new view in a new frame, as ``display(w)``)."""
        from ipywidgets.widgets.widget import _remove_buffers

        def show():
            state, paths, bufs = _remove_buffers(widget.get_state())
            self._emit({"type": "display", "comm_id": widget.comm.comm_id,
                        "data": {"state": state, "buffer_paths": paths}}, bufs)
        try:
            on_host_loop = asyncio.get_running_loop() is self.server.loop
        except RuntimeError:
            on_host_loop = False
        show() if on_host_loop else self.server.call(show)  # as IPython's display(), from a "cell" on the loop

    def frame(self, n: int) -> Any:
        """The Playwright frame of output ``n`` (1-based)."""
        import time

        origin = f"http://out-{n}.localhost:{self.server.port}"
        deadline = time.monotonic() + 30
        while True:  # an out-of-process frame is attached to the driver a little after it loads
            for f in self.page.main_frame.child_frames:
                if f.url.startswith(origin):
                    return f
            if time.monotonic() > deadline:
                raise LookupError(f"no output frame {n} (frames: {[f.url for f in self.page.frames]})")
            self.page.wait_for_timeout(200)

    def frame_state(self, n: int) -> dict:
        return self.frame(n).evaluate("() => window.__frame")

    def page_errors(self) -> list[str]:
        errs = list(self.page.evaluate("() => window.__host.errors"))
        for f in self.page.main_frame.child_frames:
            try:
                errs += f.evaluate("() => (window.__frame || {errors: []}).errors")
            except Exception as e:  # a frame that went away
                errs.append(f"{f.url}: {e}")
        return errs
