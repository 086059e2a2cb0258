"""GPU schedules for the model's kernels, chosen by adapter kind (real GPU or software fallback).

TVM's default GPU schedules (dlight: one workgroup per output row, shared-memory tree
reductions with barriers) suit real GPUs. On a software adapter such as SwiftShader, where a
workgroup runs on a CPU core and every barrier is a context switch, the same matrix-vector
product costs ~36 µs per output row, and a kernel with one thread per output row and no shared
memory is ~24x faster (measured, /work/shared/TOOLCHAIN.md). So:

``"gpu"`` (and ``"auto"``)
    dlight's defaults (Matmul, GEMV, Reduction, GeneralReduction, Fallback).
``"fallback"``
    :class:`RowPerThread` for every matrix product (the dequantizing ones included): one thread
    per output element, the dot product accumulated in a register, the reduction unrolled by 8
    (one packed 4-bit word), bias/residual epilogues fused into the store; no shared memory and
    no barriers. Everything else keeps dlight's rules.

The page picks the library by ``GPUAdapterInfo.isFallbackAdapter`` / ``architecture == "swiftshader"``.

Example::

    exe = compile_model(export_model(cfg, "q4f32_1"), "webgpu", schedule="fallback")
"""
from __future__ import annotations

import tvm
from tvm import relax, s_tir, tirx
from tvm.s_tir import dlight as dl

SCHEDULES = ("auto", "gpu", "fallback")
_THREADS = 64
_UNROLL = 8


class RowPerThread(dl.ScheduleRule):
    """One thread per output element of a single-reduction function; register accumulator, no barriers."""

    def apply(self, func: tirx.PrimFunc, target: tvm.target.Target, _tunable: bool):  # noqa: D102
        if not isinstance(func, tirx.PrimFunc) or target.kind.name == "llvm":
            return None
        try:
            return self._apply(func)
        except Exception:  # noqa: BLE001 - not this rule's shape: let the next rule try
            return None

    @staticmethod
    def _apply(func: tirx.PrimFunc):
        from tvm.s_tir.dlight.analysis import normalize_prim_func
        from tvm.s_tir.dlight.base import try_inline

        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        infos = try_inline(sch, infos)
        reductions = [b for b in infos if "R" in b.dom_kind()]
        if len(reductions) != 1:
            return None
        red = reductions[0]
        kinds = red.dom_kind()
        if kinds.count("R") != 1 or not kinds.endswith("R"):
            return None
        block = red.block_rv
        rest = [b.block_rv for b in infos if b.block_rv != block]
        loops = sch.get_loops(block)
        k = loops[-1]
        local = sch.cache_write(block, 0, "local")
        for b in reversed(rest):  # elementwise epilogues (bias add, residual) fold into the store
            sch.reverse_compute_inline(b)
        spatial = sch.fuse(*loops[:-1]) if len(loops) > 1 else sch.add_unit_loop(block)
        bx, tx = sch.split(spatial, [None, _THREADS])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        sch.reverse_compute_at(local, tx, preserve_unit_loops=True)
        extent = sch.get(k).extent
        if isinstance(extent, tirx.IntImm) and extent.value % _UNROLL == 0:
            _, ki = sch.split(k, [None, _UNROLL])
            sch.unroll(ki)
            sch.decompose_reduction(block, sch.get_loops(block)[-2])
        else:
            sch.decompose_reduction(block, k)
        return sch


def _rules(schedule: str) -> list:
    defaults = [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]
    if schedule == "fallback":
        return [RowPerThread(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]
    return defaults


def relax_pipeline(target: tvm.target.Target, schedule: str = "auto") -> tvm.transform.Pass:
    """TVM's generic GPU pipeline with the schedule rules for ``schedule`` (see the module doc)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    from tvm.relax.backend import gpu_generic

    @tvm.transform.module_pass(opt_level=0, name="WebLLMWidgetPipeline")
    def pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            seq = tvm.transform.Sequential(
                gpu_generic.library_dispatch_passes(target)
                + [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                   relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR(),
                   dl.ApplyDefaultSchedule(*_rules(schedule))]
                + gpu_generic.dataflow_lower_passes(target)
                + gpu_generic.finalize_passes(target))
            return seq(mod)

    return pipeline


def schedule_pipeline(mod: tvm.IRModule, target: tvm.target.Target, schedule: str = "auto"):
    """The ``relax_pipeline`` argument for ``tvm.compile``: ``"default"`` on the CPU, ours on GPUs."""
    if target.kind.name == "llvm":
        return "default"
    return relax_pipeline(target, schedule)
