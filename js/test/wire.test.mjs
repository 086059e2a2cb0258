// The page's end of the channel: envelopes with the generated protocol version, replies naming their request,
// errors with a page code and their detail nested, and a kernel of another version refused.
import { test } from "node:test";
import assert from "node:assert/strict";
import { PageChannel, PageError, describeError, errorMessage, isPageErrorCode } from "../src/protocol.ts";
import { ERROR_CODES, KINDS, PAGE_ERROR_CODES, PROTOCOL_VERSION } from "../src/wire/schema.gen.ts";

/** An anywidget model that records what the page sends and lets the test play the kernel. */
function fakeModel() {
  const listeners = new Map();
  return {
    sent: [],
    on(ev, fn) { listeners.set(ev, fn); },
    off(ev) { listeners.delete(ev); },
    send(msg, _cb, buffers) { this.sent.push({ msg, buffers }); },
    kernelSays(msg, buffers = []) { listeners.get("msg:custom")?.(msg, buffers); },
  };
}
const tick = () => new Promise((r) => setTimeout(r, 0));

test("the generated constants: kinds, version, and each page code a Python exception", () => {
  assert.equal(PROTOCOL_VERSION, 1);
  assert.ok(KINDS.includes("need-blob") && !KINDS.includes("stats"));
  for (const code of PAGE_ERROR_CODES) assert.match(ERROR_CODES[code], /^[A-Z]\w+$/, code);
  assert.equal(ERROR_CODES["busy"], "Busy");
  assert.ok(isPageErrorCode("busy") && !isPageErrorCode("page-reloaded") && !isPageErrorCode(42));
});

test("send and reply wrap the payload in the envelope; a reply names its request", () => {
  const model = fakeModel();
  const ch = new PageChannel(model);
  ch.ready({ widget: "chat", secure: true, webgpu: false });
  ch.reply({ v: 1, kind: "ask", id: "k7" }, "token", { text: "Hi" });
  ch.send("ack", { sha256: "ab", received: 3, chunks: 1 }, [], "b1");
  assert.deepEqual(model.sent.map((s) => s.msg), [
    { widget: "chat", secure: true, webgpu: false, v: PROTOCOL_VERSION, kind: "ready" },
    { text: "Hi", v: PROTOCOL_VERSION, kind: "token", id: "k7" },
    { sha256: "ab", received: 3, chunks: 1, v: PROTOCOL_VERSION, kind: "ack", id: "b1" },
  ]);
});

test("a handler that throws answers its request with an error message (code, message, nested detail)", async () => {
  const model = fakeModel();
  const ch = new PageChannel(model);
  ch.on("ask", () => { throw new PageError("busy", "An answer is being generated", { running: "k1" }); });
  ch.on("call", () => { throw new TypeError("not a function"); });
  model.kernelSays({ v: 1, kind: "ask", id: "k2" });
  model.kernelSays({ v: 1, kind: "call", id: "k3" });
  await tick();
  assert.deepEqual(model.sent.map((s) => s.msg), [
    { code: "busy", message: "An answer is being generated", detail: { running: "k1" }, v: 1, kind: "error", id: "k2" },
    { code: "error", message: "not a function", v: 1, kind: "error", id: "k3" },
  ]);
});

test("a kernel speaking another protocol version is answered with protocol-mismatch, its handler not run", async () => {
  const model = fakeModel();
  const ch = new PageChannel(model);
  let ran = false;
  ch.on("ask", () => { ran = true; });
  model.kernelSays({ v: PROTOCOL_VERSION + 1, kind: "ask", id: "k9" });
  await tick();
  assert.equal(ran, false);
  const [{ msg }] = model.sent;
  assert.equal(msg.kind, "error");
  assert.equal(msg.code, "protocol-mismatch");
  assert.equal(msg.id, "k9");
  assert.match(msg.message, /reload the page/);
  model.kernelSays({ hello: "not ours" }); // messages of other libraries are left alone
  assert.equal(model.sent.length, 1);
});

test("errors from elsewhere get the fallback code; the page's own keep theirs", () => {
  assert.deepEqual(describeError(new Error("boom"), "kernel-error"), { code: "kernel-error", message: "boom" });
  assert.deepEqual(describeError("plain string"), { code: "error", message: "plain string" });
  const dom = Object.assign(new Error("quota"), { code: 22 }); // DOMException-like numeric code
  assert.equal(describeError(dom, "bad-artifact").code, "bad-artifact");
  assert.deepEqual(errorMessage(new PageError("no-webgpu", "none", {})), { code: "no-webgpu", message: "none" });
});
