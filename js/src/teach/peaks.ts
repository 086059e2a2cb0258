// The adapter's read bandwidth and f32 FMA throughput, measured with two small shaders: the two roofs of a
// roofline. Bandwidth: vec4 loads over a 64 MiB buffer, grid-stride, no barriers. FMA: register-only chains.

async function medianSeconds(device: GPUDevice, code: string, buffers: GPUBuffer[], groups: number, reps: number): Promise<number> {
  const module = device.createShaderModule({ code });
  const pipeline = await device.createComputePipelineAsync({ layout: "auto", compute: { module, entryPoint: "main" } });
  const bind = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0),
    entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })) });
  const run = async () => {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline); pass.setBindGroup(0, bind); pass.dispatchWorkgroups(groups);
    pass.end();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
  };
  await run(); // compile + warm
  const times: number[] = [];
  for (let r = 0; r < reps; r++) { const t0 = performance.now(); await run(); times.push(performance.now() - t0); }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] / 1e3;
}

export interface Peaks {
  read_GBps: number;
  fma_GFLOPs: number;
  method: string;
}

export async function adapterPeaks(device: GPUDevice, reps = 5): Promise<Peaks> {
  const bytes = 64 << 20, groups = 256, wg = 256, threads = groups * wg;
  const src = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE });
  const dst = device.createBuffer({ size: threads * 16, usage: GPUBufferUsage.STORAGE });
  const n4 = bytes / 16;
  const bw = `@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> o: array<vec4<f32>>;
@compute @workgroup_size(${wg}) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  var s = vec4<f32>(0.0); var i = g.x;
  loop { if (i >= ${n4}u) { break; } s += a[i]; i += ${threads}u; }
  o[g.x] = s;
}`;
  const tBw = await medianSeconds(device, bw, [src, dst], groups, reps);
  const iters = 1024;
  const fl = `@group(0) @binding(0) var<storage, read_write> o: array<vec4<f32>>;
@compute @workgroup_size(${wg}) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let x = f32(g.x) * 1e-7;
  var a = vec4<f32>(x, x + 1.0, x + 2.0, x + 3.0); var b = a * 0.5; var c = a * 0.25; var d = a * 0.125;
  let m = vec4<f32>(0.999); let k = vec4<f32>(1e-4);
  for (var i = 0u; i < ${iters}u; i++) { a = fma(a, m, k); b = fma(b, m, k); c = fma(c, m, k); d = fma(d, m, k); }
  o[g.x] = a + b + c + d;
}`;
  const tFl = await medianSeconds(device, fl, [dst], groups, reps);
  src.destroy(); dst.destroy();
  return { read_GBps: bytes / tBw / 1e9, fma_GFLOPs: (threads * iters * 4 * 4 * 2) / tFl / 1e9,
    method: `median of ${reps} wall-clock runs each: a 64 MiB vec4 read; ${threads} threads x ${iters} x 16 FMAs` };
}
