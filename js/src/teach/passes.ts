// Records what each WebGPU compute pass of a device ran: the pipeline (named after its WGSL entry point), the
// workgroups dispatched, the bytes of the buffers bound, and its GPU time from timestamp queries where the device
// has `timestamp-query`. TVM's WebGPU runtime encodes one compute pass per kernel launch, so a pass is a dispatch.
// The device's methods are wrapped once, before any pipeline is made, so every pipeline is named and its WGSL kept.

/** WebGPU caps a query set at 4096 queries: two per pass. */
export const MAX_PASSES = 2048;

export interface PassRecord {
  /** The WGSL entry point of the pipeline the pass ran (TVM names it `<kernel>_kernel`). */
  name: string;
  /** GPU time of the pass in ns (timestamp queries), or null without them. */
  ns: number | null;
  /** Workgroups dispatched, [x, y, z] (summed when a pass dispatches more than once). */
  workgroups: [number, number, number];
  /** Bytes of the distinct buffers bound for the dispatch: what it may read or write. */
  bytes: number;
}

interface Open {
  name: string;
  workgroups: [number, number, number];
  buffers: Set<GPUBuffer>;
}

export class PassRecorder {
  readonly device: GPUDevice;
  readonly timestamps: boolean;
  /** WGSL source of each pipeline, by entry point. */
  readonly wgsl = new Map<string, string>();
  private open: Open[] = [];
  private active = false;
  private querySet?: GPUQuerySet;
  private resolveBuf?: GPUBuffer;
  private readBuf?: GPUBuffer;

  private constructor(device: GPUDevice, timestamps: boolean) {
    this.device = device;
    this.timestamps = timestamps;
    if (timestamps) {
      this.querySet = device.createQuerySet({ type: "timestamp", count: 2 * MAX_PASSES });
      const size = 2 * MAX_PASSES * 8;
      this.resolveBuf = device.createBuffer({ size, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
      this.readBuf = device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    }
    this.wrap();
  }

  /** The recorder of `device` (made, and the device wrapped, on the first call). */
  static of(device: GPUDevice, timestamps: boolean): PassRecorder {
    let r = recorders.get(device);
    if (!r) {
      r = new PassRecorder(device, timestamps);
      recorders.set(device, r);
    }
    return r;
  }

  private wrap(): void {
    const rec = this;
    const dev = this.device as unknown as Record<string, (...a: any[]) => any>;
    const code = new WeakMap<GPUShaderModule, string>();
    const bound = new WeakMap<GPUBindGroup, GPUBuffer[]>();
    const shader = dev.createShaderModule.bind(this.device);
    dev.createShaderModule = (d: GPUShaderModuleDescriptor) => {
      const m = shader(d);
      code.set(m, d.code);
      return m;
    };
    const named = (d: GPUComputePipelineDescriptor) => {
      const name = d.label || String(d.compute.entryPoint ?? "?");
      const src = code.get(d.compute.module);
      if (src !== undefined) rec.wgsl.set(name, src);
      return { ...d, label: name };
    };
    const cp = dev.createComputePipeline.bind(this.device);
    const cpa = dev.createComputePipelineAsync.bind(this.device);
    dev.createComputePipeline = (d: GPUComputePipelineDescriptor) => cp(named(d));
    dev.createComputePipelineAsync = (d: GPUComputePipelineDescriptor) => cpa(named(d));
    const bg = dev.createBindGroup.bind(this.device);
    dev.createBindGroup = (d: GPUBindGroupDescriptor) => {
      const g = bg(d);
      const bufs: GPUBuffer[] = [];
      for (const e of d.entries) {
        const r = e.resource as GPUBufferBinding | GPUBuffer;
        const b = r instanceof GPUBuffer ? r : (r as GPUBufferBinding).buffer;
        if (b) bufs.push(b);
      }
      bound.set(g, bufs);
      return g;
    };
    const ce = dev.createCommandEncoder.bind(this.device);
    dev.createCommandEncoder = (desc?: GPUCommandEncoderDescriptor) => {
      const enc = ce(desc);
      const begin = enc.beginComputePass.bind(enc);
      enc.beginComputePass = (d?: GPUComputePassDescriptor) => {
        if (!rec.active || rec.open.length >= MAX_PASSES) return begin(d);
        const i = rec.open.length;
        const o: Open = { name: "?", workgroups: [0, 0, 0], buffers: new Set() };
        rec.open.push(o);
        if (rec.querySet && !d?.timestampWrites) {
          d = { ...(d ?? {}), timestampWrites: { querySet: rec.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } };
        }
        const pass = begin(d);
        const setPipeline = pass.setPipeline.bind(pass);
        pass.setPipeline = (p: GPUComputePipeline) => {
          if (o.name === "?") o.name = p.label || "?";
          setPipeline(p);
        };
        const setBindGroup = pass.setBindGroup.bind(pass) as (...a: any[]) => void;
        (pass as any).setBindGroup = (index: number, group: GPUBindGroup | null, ...rest: any[]) => {
          for (const b of (group && bound.get(group)) ?? []) o.buffers.add(b);
          setBindGroup(index, group, ...rest);
        };
        const dispatch = pass.dispatchWorkgroups.bind(pass);
        pass.dispatchWorkgroups = (x: number, y = 1, z = 1) => {
          o.workgroups = [o.workgroups[0] + x, Math.max(o.workgroups[1], y), Math.max(o.workgroups[2], z)];
          dispatch(x, y, z);
        };
        return pass;
      };
      return enc;
    };
  }

  /** Record the passes encoded from now on. */
  start(): void {
    this.open = [];
    this.active = true;
  }

  /** The passes since start(). Call once the queue is idle (their timestamps are resolved here). */
  async stop(): Promise<PassRecord[]> {
    this.active = false;
    const passes = this.open;
    this.open = [];
    const n = passes.length;
    let ns: (number | null)[] = passes.map(() => null);
    if (this.querySet && n > 0) {
      const enc = this.device.createCommandEncoder();
      enc.resolveQuerySet(this.querySet, 0, 2 * n, this.resolveBuf!, 0);
      enc.copyBufferToBuffer(this.resolveBuf!, 0, this.readBuf!, 0, 2 * n * 8);
      this.device.queue.submit([enc.finish()]);
      await this.readBuf!.mapAsync(GPUMapMode.READ, 0, 2 * n * 8);
      const t = new BigUint64Array(this.readBuf!.getMappedRange(0, 2 * n * 8).slice(0));
      this.readBuf!.unmap();
      ns = passes.map((_, i) => (t[2 * i + 1] > t[2 * i] ? Number(t[2 * i + 1] - t[2 * i]) : 0));
    }
    return passes.map((o, i) => ({ name: o.name, ns: ns[i], workgroups: o.workgroups,
      bytes: [...o.buffers].reduce((s, b) => s + b.size, 0) }));
  }
}

const recorders = new WeakMap<GPUDevice, PassRecorder>();
