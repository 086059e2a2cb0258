// The WebGPU adapter as the engine and the model picker see it: vendor, whether it is a software fallback,
// features and the buffer limits a model must fit. One function, so the picker judges with what the engine uses.
import type { GPUInfo } from "./types";

/** Asks `nav.gpu` for the adapter the engine would use; throws a WebGPUNotAvailableError when there is none. */
export async function probeGPU(nav: Navigator): Promise<GPUInfo> {
  const g = (nav as Navigator & { gpu?: GPU }).gpu;
  if (!g) throw Object.assign(new Error("navigator.gpu is missing: WebGPU is not available"), { name: "WebGPUNotAvailableError" });
  const adapter = await g.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw Object.assign(new Error("requestAdapter returned null: WebGPU is not available"), { name: "WebGPUNotAvailableError" });
  const info = (adapter as GPUAdapter & { info?: GPUAdapterInfo }).info;
  return {
    vendor: info?.vendor ?? "",
    architecture: info?.architecture ?? "",
    description: info?.description ?? "",
    is_fallback: Boolean((info as unknown as { isFallbackAdapter?: boolean })?.isFallbackAdapter ??
      (adapter as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter),
    features: [...adapter.features].map(String).sort(),
    max_buffer_size: adapter.limits.maxBufferSize,
    max_storage_buffer_binding_size: adapter.limits.maxStorageBufferBindingSize,
  };
}
