// Batched compute dispatch for tvmjs's WebGPU context (the runtime web-llm bundles, and @mlc-ai/web-runtime).
//
// tvmjs already records the kernels of a step into one command encoder, but gives every kernel launch its own
// compute pass, its own queue.writeBuffer for the scalar (POD) arguments and a freshly created bind group: three
// round trips through the browser's GPU process per launch, ~310 launches per decoded token. Here, per launch:
//   - the launch joins the encoder's one open compute pass (ended only when tvmjs itself reaches for the encoder:
//     a copy, a readback, a flush);
//   - its scalar arguments go into a CPU-side copy of one uniform ring buffer, at a 256-byte slot bound with a
//     dynamic offset; the slots used since the last upload reach the GPU in one writeBuffer just before the
//     encoder is used or submitted (queue order keeps an earlier submit's slots intact);
//   - its bind group (the storage buffers it reads and writes, plus the ring) is created once and reused on
//     every later launch with the same buffers (most of a decode step's buffers are the same from token to
//     token); freeing a GPU buffer drops the bind groups that name it (tvmjs reuses the freed buffer's id).
// No library does this: it lives in the runtime's dispatch path, so it is written against tvmjs's own
// WebGPUContext. `checkContext` names what this code expects of it; a runtime that differs is refused (the
// caller then keeps tvmjs's own dispatch and says so), and tests/browser/test_chat_engine.py::test_batched_dispatch_is_on_and_answers_as_tvmjs_own fails.

/** What this layer reads and replaces on tvmjs's WebGPUContext (tvmjs 0.27, web-llm 0.2.85). */
interface TvmjsWebGPUContext {
  device: GPUDevice;
  pendingEncoder: GPUCommandEncoder | null;
  shaderSubmitCounter: number;
  flushCommands(): void;
  deviceFreeDataSpace(ptr: number): void;
  gpuBufferFromPtr(ptr: number): GPUBuffer;
  createShadeInternal(finfo: ShaderInfo, code: string, asyncMode: boolean): unknown;
}

interface ShaderInfo {
  name: string;
  arg_types: string[];
  launch_param_tags: string[];
}

export interface DispatchStats {
  /** Kernel launches, compute passes begun, bind groups created and reused, uniform uploads (writeBuffer). */
  launches: number;
  passes: number;
  bind_groups_created: number;
  bind_groups_reused: number;
  uniform_uploads: number;
}

const STATE = Symbol.for("webllmWidget.batchedDispatch");
/** Launches one encoder may hold before it is submitted to make room in the uniform ring. */
const RING_SLOTS = 4096;
/** Bind groups kept at most (prefill chunks of many lengths would otherwise grow the cache without end). */
const MAX_GROUPS = 16384;

/** Why `ctx` is not the tvmjs WebGPUContext this layer was written for, or null when it is. */
export function checkContext(ctx: unknown): string | null {
  if (!ctx || typeof ctx !== "object") return "no WebGPU context";
  const c = ctx as Record<string, unknown>;
  for (const m of ["flushCommands", "deviceFreeDataSpace", "gpuBufferFromPtr", "createShadeInternal"]) {
    if (typeof c[m] !== "function") return `WebGPUContext.${m} is missing`;
  }
  if ((c.createShadeInternal as (...a: unknown[]) => unknown).length !== 3) return "WebGPUContext.createShadeInternal changed its arguments";
  if (!("pendingEncoder" in c)) return "WebGPUContext.pendingEncoder is missing (tvmjs no longer batches into one encoder)";
  const own = Object.getOwnPropertyDescriptor(c, "pendingEncoder");
  if (!own || !("value" in own)) return "WebGPUContext.pendingEncoder is not a plain field";
  if (typeof c.shaderSubmitCounter !== "number") return "WebGPUContext.shaderSubmitCounter is missing";
  if (!c.device || typeof (c.device as GPUDevice).createBindGroup !== "function") return "WebGPUContext.device is not a GPUDevice";
  return null;
}

/** The layer's counters on a context it was installed on, else null. */
export function dispatchStats(ctx: unknown): DispatchStats | null {
  const s = (ctx as Record<symbol, Batched> | null)?.[STATE];
  return s ? { ...s.stats } : null;
}

/**
 * Installs batched dispatch on tvmjs's WebGPU context `ctx`; call it before the kernels are created
 * (`asyncLoadWebGPUPipelines`), right after `initWebGPU`. Throws when `ctx` is not the context it expects
 * (see checkContext).
 */
export function batchDispatch(ctx: unknown): DispatchStats {
  const why = checkContext(ctx);
  if (why) throw new Error(`batched dispatch: the tvmjs runtime changed: ${why}`);
  const c = ctx as TvmjsWebGPUContext & Record<symbol, Batched>;
  if (!c[STATE]) c[STATE] = new Batched(c);
  return c[STATE].stats;
}

class Batched {
  readonly stats: DispatchStats = { launches: 0, passes: 0, bind_groups_created: 0, bind_groups_reused: 0, uniform_uploads: 0 };
  private readonly device: GPUDevice;
  private readonly slot: number;
  private readonly ring: GPUBuffer;
  private readonly staging: ArrayBuffer;
  private readonly i32: Int32Array;
  private readonly u32: Uint32Array;
  private readonly f32: Float32Array;
  private encoder: GPUCommandEncoder | null;
  private pass: GPUComputePassEncoder | null = null;
  private pipeline: GPUComputePipeline | null = null;
  private used = 0; // ring slots taken by the launches of the current encoder
  private sent = 0; // of those, slots already uploaded
  private readonly groups = new Map<string, GPUBindGroup>(); // "kernel|ptr,ptr,..." -> bind group
  private readonly groupsOf = new Map<number, string[]>(); // buffer id -> keys of the groups that name it
  private kernels = 0;

  constructor(private readonly ctx: TvmjsWebGPUContext) {
    this.device = ctx.device;
    this.slot = Math.max(256, this.device.limits.minUniformBufferOffsetAlignment);
    this.ring = this.device.createBuffer({ size: RING_SLOTS * this.slot, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    this.staging = new ArrayBuffer(RING_SLOTS * this.slot);
    this.i32 = new Int32Array(this.staging);
    this.u32 = new Uint32Array(this.staging);
    this.f32 = new Float32Array(this.staging);
    this.encoder = ctx.pendingEncoder;
    const self = this;
    // tvmjs reads pendingEncoder before every copy, readback, free and submit: close the pass and upload the
    // launches' arguments first. It writes null after submitting: the ring starts over.
    Object.defineProperty(ctx, "pendingEncoder", {
      configurable: true,
      enumerable: true,
      get() {
        self.closePass();
        return self.encoder;
      },
      set(v: GPUCommandEncoder | null) {
        self.closePass();
        if (v !== self.encoder) self.used = self.sent = 0;
        self.encoder = v;
      },
    });
    const free = ctx.deviceFreeDataSpace.bind(ctx);
    ctx.deviceFreeDataSpace = (ptr: number) => {
      for (const key of self.groupsOf.get(ptr) ?? []) self.groups.delete(key);
      self.groupsOf.delete(ptr);
      free(ptr);
    };
    ctx.createShadeInternal = (finfo: ShaderInfo, code: string, asyncMode: boolean) => this.createKernel(finfo, code, asyncMode);
  }

  private closePass(): void {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
      this.pipeline = null;
    }
    if (this.used > this.sent) {
      const at = this.sent * this.slot;
      this.device.queue.writeBuffer(this.ring, at, this.staging, at, (this.used - this.sent) * this.slot);
      this.sent = this.used;
      this.stats.uniform_uploads++;
    }
  }

  private createKernel(finfo: ShaderInfo, code: string, asyncMode: boolean): unknown {
    const grid: number[] = []; // launch argument i sets workgroup count (0..2) or workgroup size (3..5)
    let writes: boolean[] = [];
    for (const tag of finfo.launch_param_tags) {
      const axis = tag.charCodeAt(tag.length - 1) - 120; // "x" -> 0
      if (tag.startsWith("blockIdx.") && axis >= 0 && axis < 3) grid.push(axis);
      else if (tag.startsWith("threadIdx.") && axis >= 0 && axis < 3) grid.push(axis + 3);
      else if (tag.startsWith("paramWriteAccess:")) writes = JSON.parse(tag.slice("paramWriteAccess:".length));
      else throw new Error(`batched dispatch: launch tag ${tag} of ${finfo.name} is not understood`);
    }
    const buffers: number[] = [];
    const scalars: { index: number; kind: "i" | "u" | "f" }[] = [];
    finfo.arg_types.forEach((t, i) => {
      if (t === "handle") buffers.push(i);
      else if (t.startsWith("int")) scalars.push({ index: i, kind: "i" });
      else if (t.startsWith("uint")) scalars.push({ index: i, kind: "u" });
      else if (t.startsWith("float")) scalars.push({ index: i, kind: "f" });
      else throw new Error(`batched dispatch: argument type ${t} of ${finfo.name} is not understood`);
    });
    if (writes.length !== buffers.length) throw new Error(`batched dispatch: ${finfo.name} names ${writes.length} write flags for ${buffers.length} buffers`);
    const entries: GPUBindGroupLayoutEntry[] = buffers.map((_, b) => ({
      binding: b, visibility: GPUShaderStage.COMPUTE, buffer: { type: writes[b] ? "storage" : "read-only-storage" },
    }));
    // the scalars, then the unpacked workgroup count along x, as a uniform struct at the last binding
    entries.push({ binding: buffers.length, visibility: GPUShaderStage.COMPUTE, buffer: { type: "uniform", hasDynamicOffset: true } });
    const layout = this.device.createBindGroupLayout({ entries });
    const pipelineLayout = this.device.createPipelineLayout({ bindGroupLayouts: [layout] });
    const module = this.device.createShaderModule({ code, compilationHints: [{ entryPoint: "main", layout: pipelineLayout }] });
    const desc: GPUComputePipelineDescriptor = { layout: pipelineLayout, compute: { module, entryPoint: finfo.name } };
    const uniformBytes = (scalars.length + 1) * 4;
    const nargs = buffers.length + scalars.length;
    const kernel = `${this.kernels++}|`;
    const make = (pipeline: GPUComputePipeline) => (...args: number[]) => {
      if (args.length !== nargs + grid.length) throw new Error(`batched dispatch: ${finfo.name} got ${args.length} arguments`);
      const dims = [1, 1, 1, 1, 1, 1];
      grid.forEach((d, i) => { dims[d] = args[nargs + i]; });
      if (dims[2] !== 1) throw new Error("WebGPU: blockIdx.z is reserved for internal use");
      // WebGPU caps a dimension at 65535 workgroups: fold x into z; the kernel unfolds it with the x count
      const wantX = dims[0];
      let x = wantX, z = 1;
      while (x >= 65536) {
        x = Math.ceil(x / 2);
        z *= 2;
      }
      if (this.used === RING_SLOTS) this.ctx.flushCommands(); // ring full: submit what is recorded
      const slot = this.used++;
      const base = (slot * this.slot) / 4;
      scalars.forEach((s, i) => {
        const v = args[s.index];
        if (s.kind === "i") this.i32[base + i] = v;
        else if (s.kind === "u") this.u32[base + i] = v;
        else this.f32[base + i] = v;
      });
      this.u32[base + scalars.length] = wantX;
      let key = kernel;
      for (const b of buffers) key += args[b] + ",";
      let group = this.groups.get(key);
      if (group) this.stats.bind_groups_reused++;
      else {
        if (this.groups.size >= MAX_GROUPS) {
          this.groups.clear();
          this.groupsOf.clear();
        }
        const bg: GPUBindGroupEntry[] = buffers.map((b, i) => ({ binding: i, resource: { buffer: this.ctx.gpuBufferFromPtr(args[b]) } }));
        bg.push({ binding: buffers.length, resource: { buffer: this.ring, offset: 0, size: uniformBytes } });
        group = this.device.createBindGroup({ layout, entries: bg });
        this.groups.set(key, group);
        for (const b of buffers) {
          const keys = this.groupsOf.get(args[b]);
          if (keys) keys.push(key);
          else this.groupsOf.set(args[b], [key]);
        }
        this.stats.bind_groups_created++;
      }
      // (no encoder means the last one was submitted, which emptied the ring: this launch has slot 0)
      if (!this.encoder) this.encoder = this.device.createCommandEncoder();
      if (!this.pass) {
        this.pass = this.encoder.beginComputePass();
        this.stats.passes++;
      }
      if (this.pipeline !== pipeline) {
        this.pass.setPipeline(pipeline);
        this.pipeline = pipeline;
      }
      this.pass.setBindGroup(0, group, [slot * this.slot]);
      this.pass.dispatchWorkgroups(x, dims[1], z);
      this.stats.launches++;
      this.ctx.shaderSubmitCounter++;
    };
    if (asyncMode) return this.device.createComputePipelineAsync(desc).then(make);
    return make(this.device.createComputePipeline(desc));
  }
}
