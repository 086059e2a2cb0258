// What web-llm, tvmjs and WebGPU throw becomes one of the page's error codes, with a sentence a person can act on.
import { test } from "node:test";
import assert from "node:assert/strict";
import { enableWebGPUHint, errorPayload, toEngineError } from "../src/engine/errors.ts";
import { EngineError } from "../src/engine/types.ts";
import { PageError } from "../src/protocol.ts";
import { PAGE_ERROR_CODES } from "../src/wire/schema.gen.ts";

const named = (name, message) => Object.assign(new Error(message), { name });

test("each kind of failure maps to its code", () => {
  const cases = [
    [named("WebGPUNotAvailableError", "WebGPU is not supported in your current environment"), "no-webgpu"],
    [named("ShaderF16SupportError", "This model requires WebGPU extension shader-f16"), "no-shader-f16"],
    [new Error("GPUDevice was lost: Device is lost"), "device-lost"],
    [new RangeError("Array buffer allocation failed"), "out-of-memory"],
    [named("ContextWindowSizeExceededError", "Prompt tokens: 300 exceed context window size: 256"), "context-overflow"],
    [named("AbortError", "The operation was aborted"), "aborted"],
    [named("ModelNotFoundError", "Cannot find model record"), "bad-model"],
    [new Error("Cannot fetch https://x.test/model.wasm"), "bad-artifact"],
    [new Error("something nobody foresaw"), "error"],
  ];
  for (const [err, code] of cases) {
    const e = toEngineError(err);
    assert.ok(e instanceof EngineError);
    assert.equal(e.code, code, `${err.name}: ${err.message}`);
    assert.ok(PAGE_ERROR_CODES.includes(e.code));
    if (code !== "error") assert.ok(e.message.includes(err.message), "the original message is kept for the record");
  }
});

test("a context overflow carries the token counts a program can test", () => {
  const e = toEngineError(named("ContextWindowSizeExceededError",
    "Prompt tokens: 300 exceed context window size: 256"));
  assert.deepEqual(e.detail, { prompt_tokens: 300, context_window_size: 256 });
  assert.deepEqual(errorPayload(e).detail, { prompt_tokens: 300, context_window_size: 256 });
  assert.equal(errorPayload(new Error("x")).detail, undefined); // no empty detail on the wire
});

test("an error already named where it was found keeps its code and detail; the generic code does not", () => {
  const busy = toEngineError(new PageError("busy", "An answer is being generated", { id: "k1" }));
  assert.equal(busy.code, "busy");
  assert.deepEqual(busy.detail, { id: "k1" });
  // "error" names nothing: the rules may still find what it was
  const generic = toEngineError(Object.assign(new Error("out of memory while allocating"), { code: "error" }));
  assert.equal(generic.code, "out-of-memory");
  // a code that is not the page's (a DOMException's, a Node one) is not taken as one
  assert.equal(toEngineError(Object.assign(new Error("weird"), { code: "ENOENT" })).code, "error");
});

test("the WebGPU hint names what to do in the user's browser", () => {
  const chromeLinux = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/140.0 Safari/537.36";
  assert.match(enableWebGPUHint(chromeLinux), /chrome:\/\/flags\/#enable-unsafe-webgpu.*Vulkan/);
  assert.match(enableWebGPUHint("Mozilla/5.0 (Windows NT 10.0) Firefox/140.0"), /dom\.webgpu\.enabled/);
  assert.match(enableWebGPUHint("Mozilla/5.0 (Macintosh) Version/18.0 Safari/605.1.15"), /Safari 26/);
  assert.match(enableWebGPUHint("Mozilla/5.0 (X11; Linux) Edg/140.0 Chrome/140.0"), /edge:\/\/flags/);
  assert.match(enableWebGPUHint("curl/8"), /secure context/);
});
