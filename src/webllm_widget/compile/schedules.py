"""GPU schedules for the model's kernels, chosen by adapter kind (real GPU or software fallback).

TVM's default GPU schedules (dlight: one workgroup per output row, shared-memory tree
reductions with barriers) suit real GPUs. On a software adapter such as SwiftShader, where a
workgroup runs on a CPU core and every barrier is a context switch, the same matrix-vector
product costs ~36 µs per output row, and a kernel with one thread per output row and no shared
memory is ~24x faster (measured; docs/toolchain-notes.md). So:

``"gpu"`` (and ``"auto"``)
    dlight's defaults (Matmul, GEMV, Reduction, GeneralReduction, Fallback), :class:`TokenTileGemm` with
    64 threads a workgroup for the quantized products over a prompt, which dlight's Matmul declines (their
    weights are decoded inside the sum) and which otherwise went to its one-thread-per-output Fallback, and
    :class:`LaneGemv` for one token's products ahead of dlight's GEMV (which on the WebGPU target gives each
    output row a workgroup of its own). Measured on an H100 in Chromium (bench/results/gpu.json): the
    Llama-3.2-1B shape's LM head 321 -> 110-129 µs, gate/up 49 -> 38-41 µs, decode 255 -> 314 tok/s.
``"fallback"``
    :class:`RowTileGemv` for the matrix-vector products (4 output rows a thread, 8 for the LM head;
    per group of 32 inputs the activations, each row's scale/offset and each packed word are read
    once into registers; with ``export_model(schedule="fallback")`` the group scale sits outside
    the inner sum), :class:`RowPerThread` for other single reductions (one thread per output
    element, register accumulator), bias/residual epilogues fused into the store; no shared memory
    and no barriers. :class:`TokenTileGemm` for the same products over a prompt (prefill: each thread
    a tile of 8 tokens x 8 rows, every decoded weight used for the tile's tokens).
    :func:`decode_attention_fallback` replaces the KV cache's decode attention (one thread per query
    head). Everything else keeps dlight's rules.

Rules run through :class:`ApplyRules`, which records which rule took each kernel, raises when a rule breaks
on a function it took (:class:`ScheduleRuleError`) and warns when a matrix product is left to the generic
rules (:class:`ScheduleFallbackWarning`); ``build_model_library`` keeps the record in the library's
``info.json`` (``schedule_rules``).

Every schedule first fuses ``matmul(x, permute_dims(W))`` into one ``NT_matmul`` (TVM's
``FuseTransposeMatmul``): without it a float (``q0f32``) model transposed each weight matrix into a
new buffer on every call, as a kernel of its own, before the product.

The page picks the library by ``GPUAdapterInfo.isFallbackAdapter`` / ``architecture == "swiftshader"``.

Example::

    exe = compile_model(export_model(cfg, "q4f32_1"), "webgpu", schedule="fallback")
"""
from __future__ import annotations

import tvm
from tvm import relax, s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.script import tirx as T

SCHEDULES = ("auto", "gpu", "fallback")
_THREADS = 64
_UNROLL = 8
#: Output rows from which RowTileGemv gives each thread twice its usual rows (vocabulary-sized products).
_WIDE_ROWS = 16384
#: Workgroups LaneGemv aims to launch at least (a data-center GPU has ~100+ compute units), by taking fewer rows a thread.
_MIN_GROUPS = 256


class ScheduleRuleError(RuntimeError):
    """A schedule rule took a function for its shape and then failed to schedule it (a bug in the rule)."""


class _GpuRule(dl.ScheduleRule):
    """A GPU schedule rule: declines (None) on CPU targets and on functions not of its shape, raises otherwise.

    ``_apply`` checks the shape before it changes the schedule and returns None when the function is not
    its kind; an exception after that is a broken rule, and it propagates (:class:`ApplyRules` names the
    function and the rule) instead of letting the next rule, or the slow default, take the function.
    """

    def apply(self, func: tirx.PrimFunc, target: tvm.target.Target, _tunable: bool):  # noqa: D102
        if not isinstance(func, tirx.PrimFunc) or target.kind.name == "llvm":
            return None
        return self._apply(func)

    def _apply(self, func: tirx.PrimFunc):
        raise NotImplementedError


def _region_vars(region) -> set:
    """The loop variables the start indices of a block's read ``region`` use."""
    used = set()
    for r in region.region:
        used.update(tirx.analysis.undefined_vars(r.min))
    return used


def _epilogues_fit(red, rest) -> bool:
    """Whether every block besides the reduction ``red`` is elementwise over its output (bias add, residual
    add, cast): then it folds into the reduction's store. A broadcast after the reduction (RMSNorm's
    scale of every element by the row's sum) does not."""
    from tvm_ffi.structural import structural_equal

    out_dom = red.dom()[:-1]
    for b in rest:
        dom = b.dom()
        if not b.is_injective() or len(dom) != len(out_dom):
            return False
        if not all(x == y if isinstance(x, int) and isinstance(y, int) else structural_equal(x, y)
                   for x, y in zip(dom, out_dom)):
            return False
    return True


class RowPerThread(_GpuRule):
    """One thread per output element of a single-reduction function; register accumulator, no barriers."""

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
        if not _epilogues_fit(red, [b for b in infos if b.block_rv != block]):
            return None
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


class RowTileGemv(_GpuRule):
    """Matrix-vector products: ``rows`` output rows per thread, weights, scales and inputs read once into registers.

    On SwiftShader every storage-buffer read is a per-lane gather with a bounds check, so the cost of a
    dequantizing GEMV is mostly its loads. Here each thread computes ``rows`` consecutive output rows
    of one token; per group of 32 inputs it reads the 32 activations once (shared by its rows), each
    row's scale/min once, and each packed weight word once, then unrolls the 32 multiply-adds of each
    row. Measured on SwiftShader for SmolLM2's 3072x576 Q4_1 gate/up matrix: 13.6 ms (one row per
    thread, 64 threads) -> 5.5 ms (4 rows, 16 threads). Applies when the reduction length is a
    multiple of 32 and the rows tile exactly; other reductions fall through to :class:`RowPerThread`.
    """

    def __init__(self, threads: int = 16, rows: int = 4):
        self.threads, self.rows = threads, rows

    @staticmethod
    def _blocks(func: tirx.PrimFunc):
        """(schedule, blocks with elementwise producers inlined, reduction blocks), or None if not normalizable."""
        from tvm.s_tir.dlight.analysis import normalize_prim_func
        from tvm.s_tir.dlight.base import try_inline

        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        infos = try_inline(sch, infos)
        return sch, infos, [b for b in infos if "R" in b.dom_kind()]

    def _product(self, sch, infos, reductions, min_kinds: int):
        """Match one reduction over the last loop (rows, then k) whose k is a multiple of 32 and whose rows tile;
        write its result through a local buffer with the elementwise epilogues (bias add, residual) folded into
        the store. Returns (block, local, k extent, threads, rows, reads) with reads as (index, buffer, varies by
        row, varies by k), or None without touching the schedule."""
        if len(reductions) != 1:
            return None
        red = reductions[0]
        kinds = red.dom_kind()
        if kinds.count("R") != 1 or not kinds.endswith("R") or len(kinds) < min_kinds:
            return None
        block = red.block_rv
        loops = sch.get_loops(block)
        n_ext, k_ext = sch.get(loops[-2]).extent, sch.get(loops[-1]).extent
        if not (isinstance(n_ext, tirx.IntImm) and isinstance(k_ext, tirx.IntImm)):
            return None
        n_ext, k_ext = int(n_ext.value), int(k_ext.value)
        if k_ext % 32:
            return None
        fit = self._tile(n_ext)
        if fit is None:
            return None
        threads, rows = fit
        if not _epilogues_fit(red, [b for b in infos if b.block_rv != block]):
            return None
        stmt = sch.get(block)
        n_var = stmt.iter_vars[len(kinds) - 2].var
        k_var = stmt.iter_vars[-1].var
        reads = []
        for i, region in enumerate(stmt.reads):
            used = _region_vars(region)
            reads.append((i, region.source, n_var in used, k_var in used))
        rest = [b.block_rv for b in infos if b.block_rv != block]
        local = sch.cache_write(block, 0, "local")
        for b in reversed(rest):
            sch.reverse_compute_inline(b)
        return block, local, k_ext, threads, rows, reads

    def _apply(self, func: tirx.PrimFunc):
        got = self._blocks(func)
        if got is None:
            return None
        sch, infos, reductions = got
        if len(reductions) == 3:
            return self._apply_factored(sch, infos, reductions)
        m = self._product(sch, infos, reductions, min_kinds=2)
        if m is None:
            return None
        block, local, k_ext, threads, rows, reads = m
        loops = sch.get_loops(block)
        lead, n, k = loops[:-2], loops[-2], loops[-1]
        st = sch.fuse(*lead) if len(lead) > 1 else (lead[0] if lead else None)
        nb, tx, ri = sch.split(n, [None, threads, rows])
        ko, kw, kj = sch.split(k, [None, 4, 8])
        order = ([st] if st is not None else []) + [nb, tx, ko, ri, kw, kj]
        sch.reorder(*order)
        bx = sch.fuse(st, nb) if st is not None else nb
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        sch.reverse_compute_at(local, tx, preserve_unit_loops=True)
        for i, buf, by_row, by_k in reads:
            if not by_k:
                continue
            c = sch.cache_read(block, i, "local")
            if not by_row:
                at, d = ko, 3  # activations: once per group of 32, shared by the thread's rows
            elif int(buf.shape[-1]) * 32 == k_ext:
                at, d = ri, 4  # per-group scale / min: once per row and group
            else:
                at, d = kw, 5  # packed weight words
            sch.compute_at(c, at, preserve_unit_loops=True)
            for lp in sch.get_loops(c)[d:]:
                sch.unroll(lp)
        init = sch.decompose_reduction(block, ko)
        for lp in sch.get_loops(init)[2:]:
            sch.unroll(lp)
        for lp in (ri, kw, kj):
            sch.unroll(lp)
        return sch


    def _tile(self, n_ext: int) -> tuple[int, int] | None:
        """(threads, rows a thread) that divide ``n_ext`` output rows, or None when no power of two does."""
        threads, rows = self.threads, self.rows
        if n_ext >= _WIDE_ROWS:  # the LM head: 8 rows a thread measured ~30% faster (49152x576 Q8_0)
            rows *= 2
        while n_ext % (threads * rows) and rows > 1:
            rows //= 2
        while n_ext % (threads * rows) and threads > 1:
            threads //= 2
        return None if n_ext % (threads * rows) else (threads, rows)

    def _apply_factored(self, sch, infos, reductions):
        """The factored GEMV of ``quant.nn._matvec_factored``: part (codes x inputs), xsum, sum over groups."""
        by_name = {sch.get(r.block_rv).name_hint: r for r in reductions}
        out = [r for n, r in by_name.items() if not n.endswith(("_part", "_xsum"))]
        part = [r for n, r in by_name.items() if n.endswith("_part")]
        xsum = [r for n, r in by_name.items() if n.endswith("_xsum")]
        if not (len(out) == len(part) == len(xsum) == 1):
            return None
        out, part, xsum = out[0].block_rv, part[0].block_rv, xsum[0].block_rv
        if not sch.get(out).iter_vars or len(sch.get_loops(out)) < 2:
            return None
        loops = sch.get_loops(out)
        n_ext = sch.get(loops[-2]).extent
        if not isinstance(n_ext, tirx.IntImm):
            return None
        n_ext = int(n_ext.value)
        fit = self._tile(n_ext)
        if fit is None:
            return None
        threads, rows = fit
        part_stmt = sch.get(part)
        x_idx = w_idx = None
        for i, region in enumerate(part_stmt.reads):
            if len(region.source.shape) == 2:
                w_idx, w_buf = i, region.source
            else:
                x_idx = i
        if x_idx is None or w_idx is None:
            return None
        groups = sch.get(loops[-1]).extent
        if not isinstance(groups, tirx.IntImm) or int(w_buf.shape[-1]) % int(groups.value):
            return None
        per_word = 32 // (int(w_buf.shape[-1]) // int(groups.value))  # codes per 32-bit word (8 nibbles, 4 bytes)
        rest = [b.block_rv for b in infos if b.block_rv not in (out, part, xsum)]
        local = sch.cache_write(out, 0, "local")
        for b in reversed(rest):  # elementwise epilogues (residual add) fold into the store
            sch.reverse_compute_inline(b)
        loops = sch.get_loops(out)
        lead, n, g = loops[:-2], loops[-2], loops[-1]
        st = sch.fuse(*lead) if len(lead) > 1 else (lead[0] if lead else None)
        nb, tx, ri = sch.split(n, [None, threads, rows])
        sch.reorder(*([st] if st is not None else []), nb, tx, g, ri)
        bx = sch.fuse(st, nb) if st is not None else nb
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        sch.reverse_compute_at(local, tx, preserve_unit_loops=True)
        sch.compute_at(xsum, g, preserve_unit_loops=True)
        sch.compute_at(part, ri, preserve_unit_loops=True)
        sch.set_scope(part, 0, "local")
        sch.set_scope(xsum, 0, "local")
        xc = sch.cache_read(part, x_idx, "local", consumer_blocks=[part, xsum])
        sch.compute_at(xc, g, preserve_unit_loops=True)
        for lp in sch.get_loops(xc)[3:]:
            sch.unroll(lp)
        j = sch.get_loops(part)[-1]
        jw, jc = sch.split(j, [None, per_word])
        wc = sch.cache_read(part, w_idx, "local")
        sch.compute_at(wc, jw, preserve_unit_loops=True)
        sch.decompose_reduction(out, g)
        sch.decompose_reduction(part, jw)
        sch.decompose_reduction(xsum, sch.get_loops(xsum)[-1])
        for blk in (part, xsum, wc):
            for lp in sch.get_loops(blk)[3:]:
                sch.unroll(lp)
        return sch


class LaneGemv(_GpuRule):
    """Matrix-vector products on hardware GPUs: ``lanes`` threads share each output row's sum.

    A workgroup is ``groups`` x ``lanes`` threads and computes ``groups x rows`` output rows; thread
    (group g, lane l) keeps ``rows`` running sums in registers. Step ``s`` of the sum has lane ``l`` read
    the packed word ``s * lanes + l`` of each of its rows (8 inputs of a 4-bit code row): neighbouring lanes
    read neighbouring words, so a group's read of one row is one contiguous run of ``4 x lanes`` bytes, and
    each input (with any prologue, SwiGLU's ``silu(gate) * up``) is computed once for the thread's rows.
    At the end the ``lanes`` partial sums of a row are added across threads (one shared-memory reduction a
    row), and the elementwise epilogues (residual add) are applied to the result before the store.

    A product that computes its input's RMSNorm (``quant.nn._matvec``'s ``norm``: one block with two sums, ``x^2``
    and the product) is scheduled the same way: each lane accumulates both along its walk of ``k``, both partial
    sums are added across lanes, and the epilogue scales the product by ``rsqrt(mean + eps)``. That takes the
    norm's own kernel out of one-token decode (~10 us of wall a launch on an H100; 61 a SmolLM2-135M token).

    TVM's generic ``GEMV`` rule on the WebGPU target gives every output row its own workgroup of 64 threads
    that reads 4 words per thread and then spends six barriers adding them up: on a 2048-wide input each
    workgroup does almost no work between its barriers. Applies to one-token products (no symbolic extent)
    whose reduction is the last loop and a multiple of ``8 x lanes`` (``lanes`` halves down to 8 to fit) and
    whose rows tile; others fall through to the next rule.

    ``words`` (1 unless a benchmark variant asks, ``bench/lane_gemv_lib.py``): a lane reads that many consecutive
    packed words of a row a step (a ``vec<words>`` in WGSL) instead of one.
    """

    def __init__(self, groups: int = 8, lanes: int = 32, rows: int = 4, unroll: int = 4, words: int = 1):
        self.groups, self.lanes, self.rows, self.unroll, self.words = groups, lanes, rows, unroll, words

    def tiling(self, n_ext: int, k_ext: int) -> tuple[int, int, int] | None:
        """(groups, lanes, rows a thread) for ``n_ext`` output rows over ``k_ext`` inputs, or None where they do not tile."""
        groups, lanes = self.groups, self.lanes
        if k_ext >= 8 * 8 * 2 * lanes and n_ext <= 4096:  # a deep, narrow product: more lanes a row, fewer rows
            groups, lanes = groups // 2, lanes * 2
        while lanes > 8 and k_ext % (8 * lanes * self.words):
            lanes //= 2
        if k_ext % (8 * lanes * self.words):
            return None
        rows = self.rows * (2 if n_ext >= _WIDE_ROWS else 1)
        # enough workgroups to fill the GPU: fewer rows a thread where the output is narrow
        while rows > 1 and (n_ext % (groups * rows) or n_ext // (groups * rows) < _MIN_GROUPS):
            rows //= 2
        if n_ext % (groups * rows):
            return None
        return groups, lanes, rows

    def _apply(self, func: tirx.PrimFunc):
        got = RowTileGemv._blocks(func)
        if got is None:
            return None
        sch, infos, reductions = got
        if len(reductions) != 1:
            return None
        red = reductions[0]
        kinds = red.dom_kind()
        if kinds.count("R") != 1 or not kinds.endswith("R") or len(kinds) < 2:
            return None
        block = red.block_rv
        loops = sch.get_loops(block)
        exts = [sch.get(lp).extent for lp in loops]
        if not all(isinstance(e, tirx.IntImm) for e in exts):
            return None  # a symbolic token count: the prompt's products (TokenTileGemm)
        n_ext, k_ext = int(exts[-2].value), int(exts[-1].value)
        shape = self.tiling(n_ext, k_ext)
        if shape is None:
            return None
        groups, lanes, rows = shape
        rest = [b for b in infos if b.block_rv != block]
        if not _epilogues_fit(red, rest):
            return None
        rest = [b.block_rv for b in rest]
        stmt = sch.get(block)
        n_var, k_var = stmt.iter_vars[len(kinds) - 2].var, stmt.iter_vars[-1].var
        per_row = []  # weights and group scales: read once per row and word into a register
        for region in stmt.reads:
            if {n_var, k_var} <= _region_vars(region):
                per_row.append(region.source)
        lead, n, k = loops[:-2], loops[-2], loops[-1]
        st = sch.fuse(*lead) if len(lead) > 1 else (lead[0] if lead else None)
        nb, ty, ri = sch.split(n, [None, groups, rows])
        W = self.words
        ko, tx, kw, kj = sch.split(k, [None, lanes, W, 8])
        sch.reorder(*([st] if st is not None else []), nb, ty, ri, tx, ko, kw, kj)
        bx = sch.fuse(st, nb) if st is not None else nb
        # partial sums per lane (rf), then the sum across lanes (the original block, a cross-thread reduction)
        rf = sch.rfactor(tx, factor_axis=0)
        bx, ty, ri, tx, ko, kw, kj = sch.get_loops(rf)[-7:]
        sch.reorder(bx, ty, tx, ko, ri, kw, kj)
        sch.bind(bx, "blockIdx.x")
        sch.bind(ty, "threadIdx.y")
        sch.bind(tx, "threadIdx.x")
        for i in range(len(sch.get(rf).writes)):  # two sums where the product computes its input's RMSNorm
            sch.set_scope(rf, i, "local")
        ko_ext = int(sch.get(ko).extent)
        if ko_ext > self.unroll and ko_ext % self.unroll == 0:
            _, ku = sch.split(ko, [None, self.unroll])
            sch.unroll(ku)
        elif ko_ext <= self.unroll:
            sch.unroll(ko)
        sch.unroll(ri)
        sch.unroll(kw)
        sch.unroll(kj)
        for buf in per_row:
            i = [j for j, r in enumerate(sch.get(rf).reads) if r.source.same_as(buf)][0]
            c = sch.cache_read(rf, i, "local")
            sch.compute_at(c, ri, preserve_unit_loops=True)
            own = sch.get_loops(c)[len(sch.get_loops(rf)) - 2:]  # the cache's loops under the rows' loop
            for lp in own:
                ext = sch.get(lp).extent
                if W > 1 and lp.same_as(own[-1]) and isinstance(ext, tirx.IntImm) and int(ext) == W:
                    sch.vectorize(lp)  # a lane's W consecutive packed words as one vector
                else:
                    sch.unroll(lp)
        sch.decompose_reduction(rf, sch.get_loops(rf)[3])
        sch.reverse_compute_at(block, sch.get_loops(rf)[0], preserve_unit_loops=True)
        # the loops reverse_compute_at made follow the block's iterators: the lanes' axis and the rows
        ivs = [iv for iv in sch.get(block).iter_vars if int(iv.dom.extent) > 1]
        a, b = sch.get_loops(block)[-2:]
        r_loop, s_loop = (a, b) if ivs[0].iter_type == tirx.IterVar.CommReduce else (b, a)
        so, si = sch.split(s_loop, [groups, rows])
        sch.reorder(si, so, r_loop)
        sch.bind(so, "threadIdx.y")
        sch.bind(r_loop, "threadIdx.x")
        if rest:
            for i in range(len(sch.get(block).writes)):
                sch.set_scope(block, i, "local")
            for b in rest[:-1]:
                sch.reverse_compute_inline(b)
            last = rest[-1]
            sch.reverse_compute_at(last, sch.get_loops(rf)[0], preserve_unit_loops=True)
            e_loop = sch.fuse(*sch.get_loops(last)[1:])
            eo, ei = sch.split(e_loop, [groups, rows])
            sch.bind(eo, "threadIdx.y")
        return sch


def _depth(sch, block, loop) -> int:
    """How many loops enclose ``block`` down to and including ``loop``."""
    stmt = sch.get(loop)
    return 1 + [i for i, lp in enumerate(sch.get_loops(block)) if sch.get(lp).same_as(stmt)][0]


def _drop_predicates(sch, names: set[str]):
    """A fresh schedule of ``sch``'s function without the ``T.where`` guards of the blocks in ``names``.

    Splitting the symbolic token axis into tiles makes TVM guard every block under the tile with
    ``token < seq_len``; on the inner multiply-adds that guard becomes a branch around each one, and the
    decoded weight is then computed again inside every branch instead of once for the tile's tokens.
    Each token's sums use only that token's activations, and only the final store writes to memory, so
    the compute blocks can run unguarded: past the last token they read whatever WebGPU's bounds-checked
    loads return and compute rows that are never stored. The store keeps its guard.
    """
    from tvm.script import from_source

    lines, out, current = sch.mod["main"].script().splitlines(), [], None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("with T.sblock("):
            current = stripped.split('"')[1]
        if stripped.startswith("T.where(") and current in names:
            continue
        out.append(line)
    func = from_source("\n".join(out))
    if isinstance(func, tvm.IRModule):
        func = func["main"]
    return s_tir.Schedule(func)


class TokenTileGemm(RowTileGemv):
    """Prefill matrix products (a symbolic token count): each thread computes ``tokens`` x ``rows`` outputs.

    During prefill the same weights multiply every prompt token. :class:`RowTileGemv` would read and
    decode each weight once per token; here a thread keeps a tile of ``tokens`` tokens x ``rows`` output
    rows in registers, and per group of 32 inputs reads the tile's activations once, then each packed
    word once and uses each decoded weight for all its tokens. No shared memory, no barriers. Any prompt
    length: the last tile's missing tokens are computed from whatever the activation buffer reads
    give there (WebGPU keeps reads in bounds) and never stored; only the store is guarded (see
    :func:`_drop_predicates`). Applies only where a leading (token) extent is symbolic: decode (one
    token) keeps :class:`RowTileGemv`.

    Measured on SwiftShader (SmolLM2-135M ggml, 32-token prefill, GPU time by timestamp queries): with
    4 tokens x 4 rows the four layer products took 10.8 s against 14.9 s per token (load 5-9, attention
    4.9 vs 3.8 s in the same runs); at load ~2, tiles of 4x4 / 8 rows x 4 / 4 x 8 tokens / 8 x 8 gave a
    whole prefill 6.4 / 7.0 / 7.0 / 7.5 tok/s (per-token kernels: 2.9). Where the rows do not tile
    (576 = 16 x 36), ``_tile`` halves the rows.
    """

    def __init__(self, threads: int = 16, rows: int = 8, tokens: int = 8):
        super().__init__(threads, rows)
        self.tokens = tokens

    @staticmethod
    def _symbolic_lead(sch, block) -> bool:
        loops = sch.get_loops(block)
        return any(not isinstance(sch.get(lp).extent, tirx.IntImm) for lp in loops[:-2])

    def _apply(self, func: tirx.PrimFunc):
        got = self._blocks(func)
        if got is None:
            return None
        sch, infos, reductions = got
        if len(reductions) == 3:
            return self._tokens_factored(sch, infos, reductions)
        if len(reductions) != 1 or not self._symbolic_lead(sch, reductions[0].block_rv):
            return None
        m = self._product(sch, infos, reductions, min_kinds=3)
        if m is None:
            return None
        block, local, k_ext, threads, rows, reads = m
        loops = sch.get_loops(block)
        lead, n, k = loops[:-2], loops[-2], loops[-1]
        st = sch.fuse(*lead) if len(lead) > 1 else lead[0]
        so, ti = sch.split(st, [None, self.tokens], disable_predication=True)
        nb, tx, ri = sch.split(n, [None, threads, rows])
        ko, kw, kj = sch.split(k, [None, 4, 8])
        sch.reorder(so, nb, tx, ko, ri, kw, kj, ti)
        bx = sch.fuse(so, nb)
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        sch.reverse_compute_at(local, tx, preserve_unit_loops=True)
        name = sch.get(block).name_hint
        caches = []
        for i, buf, by_row, by_k in reads:
            if not by_k:
                continue
            c = sch.cache_read(block, i, "local")
            if not by_row:
                at = ko  # activations of the tile's tokens: once per group of 32
                T_ = self.tokens
                sch.transform_layout(c, ("write", 0), lambda *i: (*i[:-2], i[-2] // T_, i[-2] % T_, i[-1]),
                                     assume_injective_transform=True)
                caches.append(sch.get(c).name_hint)
            elif int(buf.shape[-1]) * 32 == k_ext:
                at = ri  # per-group scale / min
            else:
                at = kw  # packed weight words (or 8 float weights)
            depth = _depth(sch, block, at)
            sch.compute_at(c, at, preserve_unit_loops=True)
            for lp in sch.get_loops(c)[depth:]:
                sch.unroll(lp)
        init = sch.decompose_reduction(block, ko)
        for lp in sch.get_loops(init)[2:] + sch.get_loops(local)[2:]:
            sch.unroll(lp)
        for lp in (ri, kw, kj, ti):
            sch.unroll(lp)
        return _drop_predicates(sch, {name, name + "_init", name + "_update", *caches})

    def _tokens_factored(self, sch, infos, reductions):
        """The factored form (part, xsum, sum over groups) with a tile of tokens x rows per thread."""
        by_name = {sch.get(r.block_rv).name_hint: r for r in reductions}
        out = [r for n, r in by_name.items() if not n.endswith(("_part", "_xsum"))]
        part = [r for n, r in by_name.items() if n.endswith("_part")]
        xsum = [r for n, r in by_name.items() if n.endswith("_xsum")]
        if not (len(out) == len(part) == len(xsum) == 1):
            return None
        out, part, xsum = out[0].block_rv, part[0].block_rv, xsum[0].block_rv
        loops = sch.get_loops(out)
        if len(loops) < 3 or not self._symbolic_lead(sch, out):
            return None
        n_ext = sch.get(loops[-2]).extent
        if not isinstance(n_ext, tirx.IntImm):
            return None
        fit = self._tile(int(n_ext.value))
        if fit is None:
            return None
        threads, rows = fit
        x_idx = w_idx = None
        for i, region in enumerate(sch.get(part).reads):
            if len(region.source.shape) == 2:
                w_idx, w_buf = i, region.source
            else:
                x_idx = i
        groups = sch.get(loops[-1]).extent
        if x_idx is None or w_idx is None or not isinstance(groups, tirx.IntImm) \
                or int(w_buf.shape[-1]) % int(groups.value):
            return None
        per_word = 32 // (int(w_buf.shape[-1]) // int(groups.value))  # codes per 32-bit word
        rest = [b.block_rv for b in infos if b.block_rv not in (out, part, xsum)]
        local = sch.cache_write(out, 0, "local")
        for b in reversed(rest):  # elementwise epilogues (residual add) fold into the store
            sch.reverse_compute_inline(b)
        loops = sch.get_loops(out)
        lead, n, g = loops[:-2], loops[-2], loops[-1]
        st = sch.fuse(*lead) if len(lead) > 1 else lead[0]
        so, ti = sch.split(st, [None, self.tokens], disable_predication=True)
        nb, tx, ri = sch.split(n, [None, threads, rows])
        sch.reorder(so, nb, tx, g, ri, ti)
        bx = sch.fuse(so, nb)
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        sch.reverse_compute_at(local, tx, preserve_unit_loops=True)
        sch.compute_at(xsum, g, preserve_unit_loops=True)
        sch.compute_at(part, ri, preserve_unit_loops=True)
        sch.set_scope(part, 0, "local")
        sch.set_scope(xsum, 0, "local")
        xc = sch.cache_read(part, x_idx, "local", consumer_blocks=[part, xsum])
        T_ = self.tokens
        sch.transform_layout(xc, ("write", 0), lambda *i: (*i[:-2], i[-2] // T_, i[-2] % T_, i[-1]),
                             assume_injective_transform=True)
        g_depth = _depth(sch, out, g)
        sch.compute_at(xc, g, preserve_unit_loops=True)
        for lp in sch.get_loops(xc)[g_depth:]:
            sch.unroll(lp)
        # part: codes x inputs for all the tile's tokens of one row; the reduction goes outside the
        # token loop so each packed word is read, and each code decoded, once for every token.
        p_loops = sch.get_loops(part)[g_depth + 1:]
        tok = [lp for lp in p_loops[:-1] if int(sch.get(lp).extent) > 1]
        j = p_loops[-1]
        if len(tok) != 1:
            return None
        sch.reorder(j, tok[0])
        jw, jc = sch.split(j, [None, per_word])
        wc = sch.cache_read(part, w_idx, "local")
        jw_depth = _depth(sch, part, jw)
        sch.compute_at(wc, jw, preserve_unit_loops=True)
        names = {sch.get(b).name_hint for b in (out, part, xsum, xc)}
        inits = [sch.decompose_reduction(out, g), sch.decompose_reduction(part, jw),
                 sch.decompose_reduction(xsum, sch.get_loops(xsum)[-1])]
        # every loop inside a thread unrolled: a local array indexed by a loop variable stays in memory
        for blk, depth in zip(inits + [local], (2, g_depth, g_depth, 2)):
            for lp in sch.get_loops(blk)[depth:]:
                sch.unroll(lp)
        for lp in sch.get_loops(xsum)[g_depth:] + sch.get_loops(part)[jw_depth - 1:] + sch.get_loops(wc)[jw_depth:]:
            sch.unroll(lp)
        for lp in (ri, ti):
            sch.unroll(lp)
        return _drop_predicates(sch, {n + sfx for n in names for sfx in ("", "_init", "_update")})


# ---------------------------------------------------------------------------------------------
# Decode attention for software adapters.

_LOG2E = 1.4426950408889634


def decode_attention_fallback(num_kv_heads: int, num_qo_heads: int, head_dim: int, dtype: str = "float32",
                              page_size: int = 16, softcap: float | None = None) -> tirx.PrimFunc:
    """Paged-KV decode attention with one thread per query head and no shared memory or barriers.

    A drop-in for ``TIRPagedKVCache``'s ``batch_decode_paged_kv`` (same arguments; the cache is made
    with RoPE applied before K is stored, so ``rotary_mode`` is 0 and Q/K are read as they are; the windowed
    layers have theirs, :func:`.attention.windowed_decode`). TVM's GPU kernel puts one 240-thread workgroup on
    each KV head (3 workgroups for
    SmolLM2) and reduces across threads through shared memory with barriers on every tile: 7.4 ms per
    layer on SwiftShader at a 16-token context. Here each query head is one thread that walks the
    cached positions with an online softmax (base 2, as the original, so ``lse`` means the same),
    holding q and the output row in registers: no barrier, which SwiftShader pays for dearly,
    and at the short contexts of a chat the work per thread is small. ``softcap``: scores become
    ``cap * tanh(score / cap)`` (:func:`.attention.score_cap`), as in the kernel replaced.
    """
    from .attention import score_cap

    H_qo, H_kv, D = num_qo_heads, num_kv_heads, head_dim
    group = H_qo // H_kv

    @T.prim_func(s_tir=True)
    def batch_decode_paged_kv(q_handle: T.handle, pages_handle: T.handle, indptr_handle: T.handle,
                              values_handle: T.handle, length_handle: T.handle, k_rope_handle: T.handle,
                              q_rope_handle: T.handle, out_handle: T.handle, lse_handle: T.handle,
                              rotary_mode: T.int32, rope_scale: T.float32, rope_theta: T.float32,
                              sm_scale: T.float32):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        B, nnz_pages, max_num_pages = T.int32(), T.int32(), T.int32()
        pages_off = T.int64()
        indptr_off, values_off, k_rope_off, q_rope_off, length_off = T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
        Q = T.match_buffer(q_handle, (B, H_qo, D), dtype)
        pages = T.match_buffer(pages_handle, (max_num_pages, 2, H_kv, page_size, D), dtype, elem_offset=pages_off)
        indptr = T.match_buffer(indptr_handle, (B + 1,), "int32", elem_offset=indptr_off)
        values = T.match_buffer(values_handle, (nnz_pages,), "int32", elem_offset=values_off)
        last_len = T.match_buffer(length_handle, (B,), "int32", elem_offset=length_off)
        k_rope = T.match_buffer(k_rope_handle, (B,), "int32", elem_offset=k_rope_off)  # noqa: F841 - ABI only
        q_rope = T.match_buffer(q_rope_handle, (B,), "int32", elem_offset=q_rope_off)  # noqa: F841 - ABI only
        output = T.match_buffer(out_handle, (B, H_qo, D), dtype)
        lse = T.match_buffer(lse_handle, (B, H_qo), "float32")
        for bx in T.thread_binding(B * H_qo, thread="blockIdx.x"):
            for tx in T.thread_binding(1, thread="threadIdx.x"):
                with T.sblock("attn"):
                    T.reads()
                    T.writes()
                    q = T.sblock_alloc_buffer((D,), "float32", scope="local")
                    o = T.sblock_alloc_buffer((D,), "float32", scope="local")
                    s = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    m = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    m_new = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    den = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    b: T.let[T.int32] = (bx + tx) // H_qo
                    h: T.let[T.int32] = (bx + tx) % H_qo
                    kvh: T.let[T.int32] = h // group
                    begin: T.let[T.int32] = indptr[b]
                    end: T.let[T.int32] = indptr[b + 1]
                    n: T.let[T.int32] = T.if_then_else(begin != end, (end - begin - 1) * page_size + last_len[b], 0)
                    for d in T.unroll(D):
                        q[d] = T.Cast("float32", Q[b, h, d]) * sm_scale * T.float32(_LOG2E)
                        o[d] = T.float32(0)
                    m[0] = T.float32(-5e4)
                    den[0] = T.float32(1.0)
                    for pos in T.serial(n):
                        page: T.let[T.int32] = values[begin + pos // page_size]
                        s[0] = T.float32(0)
                        for d in T.unroll(D):
                            s[0] = s[0] + q[d] * T.Cast("float32", pages[page, 0, kvh, pos % page_size, d])
                        s[0] = score_cap(s[0], softcap)
                        m_new[0] = T.max(m[0], s[0])
                        den[0] = den[0] * T.exp2(m[0] - m_new[0]) + T.exp2(s[0] - m_new[0])
                        for d in T.unroll(D):
                            o[d] = o[d] * T.exp2(m[0] - m_new[0]) + T.exp2(s[0] - m_new[0]) * T.Cast(
                                "float32", pages[page, 1, kvh, pos % page_size, d])
                        m[0] = m_new[0]
                    for d in T.unroll(D):
                        output[b, h, d] = T.Cast(dtype, o[d] / den[0])
                    lse[b, h] = m[0] + T.log2(den[0])

    return batch_decode_paged_kv


#: Positions of one slice of :func:`decode_attention_gpu`'s split context (the measured choice; see its docstring).
SLICE_POSITIONS = 64


def decode_attention_gpu(num_kv_heads: int, num_qo_heads: int, head_dim: int, dtype: str = "float32",
                         page_size: int = 16, softcap: float | None = None,
                         slice_positions: int | None = None) -> tirx.PrimFunc:
    """Paged-KV decode attention for hardware GPUs: one workgroup per query head and slice of the context, its
    threads splitting the slice's positions; long contexts split across workgroups and merged (flash-decoding).

    A drop-in for ``TIRPagedKVCache``'s ``batch_decode_paged_kv`` (same arguments and results, RoPE applied
    before K is stored, as :func:`decode_attention_fallback`). TVM's kernel runs one workgroup per KV head
    (3 for SmolLM2) that walks the context a few positions per step with barriers between steps. Here each of
    ``T`` threads keeps its own online softmax (base 2) over positions ``tx, tx + T, ...``, four at a time, with
    q and its output row in registers; the threads' partial states are then merged through shared memory in two
    rounds (half the threads fold in the other half, then every thread combines the halves' rows for its own
    output dimensions). Three barriers in all; shared memory stays at 8 KB plus two floats a thread.
    ``softcap`` as :func:`decode_attention_fallback`'s.

    Split-KV: while the batch's pages (``nnz_pages``, known to the host) fit one slice of ``slice_positions``
    (default :data:`SLICE_POSITIONS`, 64) the kernel runs as described, one workgroup per query head, and writes
    the result. Past that, the host launches ``ceil(nnz_pages / slice pages)`` workgroups per query head, each over
    its slice of the positions, writing a normalised partial output and its ``lse`` to a workspace; a second
    kernel (one workgroup per query head, a thread per output dimension, no barriers) merges the slices by their
    ``lse``. So every workgroup does the work of a short context, whatever the context length, and the GPU gets
    ``slices`` times the workgroups; short contexts keep one dispatch. ``slice_positions`` must be a multiple of
    ``page_size``: a shorter slice splits shorter contexts into more workgroups (a thread then reads fewer
    positions), a longer one splits later. Positions past a slice's end read the slice's last position (weighed
    0), so a short slice reads no rows of the next one; with slices of 64 and 64 threads a thread's step of four
    positions holds one real one.

    Measured (bench/gpu_device.py, H100, Chromium 156, SmolLM2-135M, the same library built with three slice
    lengths in one call, median decode tok/s at prompts 32 / 128 / 512): slices of 64 positions 356 / 338 / 326,
    of 256 (one step of four positions a thread) 375 / 337 / 284, one slice whatever the context 368 / 334 / 269.
    """
    from .attention import score_cap

    H_qo, H_kv, D = num_qo_heads, num_kv_heads, head_dim
    group = H_qo // H_kv
    S = max(1, min(32, 2048 // D))  # rows of the shared merge buffer (8 KB)
    TX = 2 * S
    U = 4  # positions a thread takes at once
    SPAN = slice_positions or SLICE_POSITIONS  # positions of one slice
    if slice_positions and slice_positions % page_size:
        raise ValueError(f"slice_positions {slice_positions} is not a multiple of the page size {page_size}")
    PPS = max(1, SPAN // page_size)  # pages of one slice

    @T.prim_func(s_tir=True)
    def batch_decode_paged_kv(q_handle: T.handle, pages_handle: T.handle, indptr_handle: T.handle,
                              values_handle: T.handle, length_handle: T.handle, k_rope_handle: T.handle,
                              q_rope_handle: T.handle, out_handle: T.handle, lse_handle: T.handle,
                              rotary_mode: T.int32, rope_scale: T.float32, rope_theta: T.float32,
                              sm_scale: T.float32):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        B, nnz_pages, max_num_pages = T.int32(), T.int32(), T.int32()
        pages_off = T.int64()
        indptr_off, values_off, k_rope_off, q_rope_off, length_off = T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
        Q = T.match_buffer(q_handle, (B, H_qo, D), dtype)
        pages = T.match_buffer(pages_handle, (max_num_pages, 2, H_kv, page_size, D), dtype, elem_offset=pages_off)
        indptr = T.match_buffer(indptr_handle, (B + 1,), "int32", elem_offset=indptr_off)
        values = T.match_buffer(values_handle, (nnz_pages,), "int32", elem_offset=values_off)
        last_len = T.match_buffer(length_handle, (B,), "int32", elem_offset=length_off)
        k_rope = T.match_buffer(k_rope_handle, (B,), "int32", elem_offset=k_rope_off)  # noqa: F841 - ABI only
        q_rope = T.match_buffer(q_rope_handle, (B,), "int32", elem_offset=q_rope_off)  # noqa: F841 - ABI only
        output = T.match_buffer(out_handle, (B, H_qo, D), dtype)
        lse = T.match_buffer(lse_handle, (B, H_qo), "float32")
        # slices per query head: every sequence of the batch has at most nnz_pages pages
        splits: T.let[T.int32] = (nnz_pages + PPS - 1) // PPS
        # per (query head, slice): the slice's normalised output (D) and its lse (base 2)
        part = T.alloc_buffer((splits, B * H_qo, D + 1), "float32")
        for c in T.thread_binding(splits, thread="blockIdx.y"):
          for bx in T.thread_binding(B * H_qo, thread="blockIdx.x"):
            for tx in T.thread_binding(TX, thread="threadIdx.x"):
                with T.sblock("attn"):
                    T.reads()
                    T.writes()
                    o_sh = T.sblock_alloc_buffer((S, D), "float32", scope="shared")
                    md_sh = T.sblock_alloc_buffer((TX, 2), "float32", scope="shared")
                    q = T.sblock_alloc_buffer((D,), "float32", scope="local")
                    o = T.sblock_alloc_buffer((D,), "float32", scope="local")
                    s = T.sblock_alloc_buffer((U,), "float32", scope="local")
                    at = T.sblock_alloc_buffer((U,), "int32", scope="local")
                    pg = T.sblock_alloc_buffer((U,), "int32", scope="local")
                    scale = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    m = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    m_new = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    den = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    big = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    tot = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    acc = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    b: T.let[T.int32] = bx // H_qo
                    h: T.let[T.int32] = bx % H_qo
                    kvh: T.let[T.int32] = h // group
                    begin: T.let[T.int32] = indptr[b]
                    end: T.let[T.int32] = indptr[b + 1]
                    n: T.let[T.int32] = T.if_then_else(begin != end, (end - begin - 1) * page_size + last_len[b], 0)
                    # this workgroup's positions: all of them, or its slice when the context is split
                    lo: T.let[T.int32] = T.if_then_else(splits == 1, 0, T.min(c * SPAN, n))
                    hi: T.let[T.int32] = T.if_then_else(splits == 1, n, T.min(c * SPAN + SPAN, n))
                    for d in T.unroll(D):
                        q[d] = T.Cast("float32", Q[b, h, d]) * sm_scale * T.float32(_LOG2E)
                        o[d] = T.float32(0)
                    m[0] = T.float32(-5e4)
                    den[0] = T.float32(0)
                    # U positions a step (tx, tx + TX, ...): their loads are independent, so they overlap
                    for i in T.serial((hi - lo + TX * U - 1) // (TX * U)):
                        for u in T.unroll(U):
                            # past the slice's end: read its last position (in bounds), weigh it 0
                            at[u] = T.max(T.min(lo + (i * U + u) * TX + tx, hi - 1), 0)
                            pg[u] = values[begin + at[u] // page_size]
                            s[u] = T.float32(0)
                            for d in T.unroll(D):
                                s[u] = s[u] + q[d] * T.Cast("float32", pages[pg[u], 0, kvh, at[u] % page_size, d])
                            s[u] = T.if_then_else(lo + (i * U + u) * TX + tx < hi, score_cap(s[u], softcap),
                                                  T.float32(-6e4))
                        m_new[0] = T.max(T.max(m[0], s[0]), T.max(s[1], T.max(s[2], s[3])))
                        scale[0] = T.exp2(m[0] - m_new[0])
                        for u in T.unroll(U):
                            s[u] = T.exp2(s[u] - m_new[0])
                        den[0] = den[0] * scale[0] + s[0] + s[1] + s[2] + s[3]
                        for d in T.unroll(D):
                            o[d] = o[d] * scale[0] + (
                                s[0] * T.Cast("float32", pages[pg[0], 1, kvh, at[0] % page_size, d])
                                + s[1] * T.Cast("float32", pages[pg[1], 1, kvh, at[1] % page_size, d])
                                + s[2] * T.Cast("float32", pages[pg[2], 1, kvh, at[2] % page_size, d])
                                + s[3] * T.Cast("float32", pages[pg[3], 1, kvh, at[3] % page_size, d]))
                        m[0] = m_new[0]
                    # round 1: threads S.. hand their state to thread tx - S, which folds it into its own
                    md_sh[tx, 0] = m[0]
                    md_sh[tx, 1] = den[0]
                    if tx >= S:
                        for d in T.unroll(D):
                            o_sh[tx - S, d] = o[d]
                    T.tvm_storage_sync("shared")
                    if tx < S:
                        m_new[0] = T.max(m[0], md_sh[tx + S, 0])
                        den[0] = den[0] * T.exp2(m[0] - m_new[0]) + md_sh[tx + S, 1] * T.exp2(md_sh[tx + S, 0] - m_new[0])
                        for d in T.unroll(D):
                            o[d] = o[d] * T.exp2(m[0] - m_new[0]) + o_sh[tx, d] * T.exp2(md_sh[tx + S, 0] - m_new[0])
                        m[0] = m_new[0]
                    T.tvm_storage_sync("shared")
                    # round 2: the S folded states, each thread combining them for its own output dimensions
                    if tx < S:
                        md_sh[tx, 0] = m[0]
                        md_sh[tx, 1] = den[0]
                        for d in T.unroll(D):
                            o_sh[tx, d] = o[d]
                    T.tvm_storage_sync("shared")
                    big[0] = T.float32(-5e4)
                    for j in T.serial(S):
                        big[0] = T.max(big[0], md_sh[j, 0])
                    tot[0] = T.float32(0)
                    for j in T.serial(S):
                        tot[0] = tot[0] + md_sh[j, 1] * T.exp2(md_sh[j, 0] - big[0])
                    for dd in T.serial((D + TX - 1) // TX):
                        if dd * TX + tx < D:
                            acc[0] = T.float32(0)
                            for j in T.serial(S):
                                acc[0] = acc[0] + o_sh[j, dd * TX + tx] * T.exp2(md_sh[j, 0] - big[0])
                            if splits == 1:
                                output[b, h, dd * TX + tx] = T.Cast(dtype, acc[0] / T.max(tot[0], T.float32(1e-30)))
                            else:
                                part[c, bx, dd * TX + tx] = acc[0] / T.max(tot[0], T.float32(1e-30))
                    if tx == 0:
                        if splits == 1:
                            lse[b, h] = big[0] + T.log2(T.max(tot[0], T.float32(1e-30)))
                        else:
                            part[c, bx, D] = big[0] + T.log2(T.max(tot[0], T.float32(1e-30)))
        if splits > 1:
            # merge the slices of each query head by their lse: a thread per output dimension, no barriers
            for bx in T.thread_binding(B * H_qo, thread="blockIdx.x"):
                for tx in T.thread_binding(TX, thread="threadIdx.x"):
                    with T.sblock("merge"):
                        T.reads()
                        T.writes()
                        big = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        tot = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        acc = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        w = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        big[0] = T.float32(-1e30)
                        for j in T.serial(splits):
                            big[0] = T.max(big[0], part[j, bx, D])
                        tot[0] = T.float32(0)
                        for j in T.serial(splits):
                            tot[0] = tot[0] + T.exp2(part[j, bx, D] - big[0])
                        for dd in T.serial((D + TX - 1) // TX):
                            if dd * TX + tx < D:
                                acc[0] = T.float32(0)
                                for j in T.serial(splits):
                                    w[0] = T.exp2(part[j, bx, D] - big[0])
                                    acc[0] = acc[0] + w[0] * part[j, bx, dd * TX + tx]
                                output[bx // H_qo, bx % H_qo, dd * TX + tx] = T.Cast(dtype, acc[0] / tot[0])
                        if tx == 0:
                            lse[bx // H_qo, bx % H_qo] = big[0] + T.log2(tot[0])

    return batch_decode_paged_kv


def prefill_attention_fallback(num_kv_heads: int, num_qo_heads: int, head_dim: int,
                               dtype: str = "float32", softcap: float | None = None) -> tirx.PrimFunc:
    """Ragged prefill attention (the chunk's queries against the chunk's own keys), barrier-free.

    A drop-in for ``TIRPagedKVCache``'s ``batch_prefill_ragged_kv`` (same arguments; RoPE is applied
    before attention, so ``rotary_mode`` is 0 as for :func:`decode_attention_fallback`). TVM's kernel
    tiles queries and keys through shared memory with a barrier per tile; here each (query token, head)
    is one thread (16 a workgroup) walking its keys up to the causal limit with an online softmax in
    base 2, so ``lse`` means what the original's does (the KV cache merges it with the paged part). ``softcap`` as
    in :func:`decode_attention_fallback`.
    """
    from .attention import score_cap

    H_qo, H_kv, D = num_qo_heads, num_kv_heads, head_dim
    group = H_qo // H_kv
    TX = 16

    @T.prim_func(s_tir=True)
    def batch_prefill_ragged_kv(q_handle: T.handle, q_indptr_handle: T.handle, k_handle: T.handle,
                                v_handle: T.handle, kv_indptr_handle: T.handle, q_rope_handle: T.handle,
                                k_rope_handle: T.handle, out_handle: T.handle, lse_handle: T.handle,
                                causal: T.int32, rotary_mode: T.int32, rope_scale: T.float32,
                                rope_theta: T.float32, sm_scale: T.float32):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch_size, qo_len, kv_len = T.int32(), T.int32(), T.int32()
        q_indptr_off, kv_indptr_off, q_rope_off, k_rope_off = T.int32(), T.int32(), T.int32(), T.int32()
        Q = T.match_buffer(q_handle, (qo_len, H_qo, D), dtype)
        q_indptr = T.match_buffer(q_indptr_handle, (batch_size + 1,), "int32", elem_offset=q_indptr_off)
        K = T.match_buffer(k_handle, (kv_len, H_kv, D), dtype)
        V = T.match_buffer(v_handle, (kv_len, H_kv, D), dtype)
        kv_indptr = T.match_buffer(kv_indptr_handle, (batch_size + 1,), "int32", elem_offset=kv_indptr_off)
        q_rope = T.match_buffer(q_rope_handle, (qo_len,), "int32", elem_offset=q_rope_off)  # noqa: F841 - ABI only
        k_rope = T.match_buffer(k_rope_handle, (batch_size,), "int32", elem_offset=k_rope_off)  # noqa: F841 - ABI only
        output = T.match_buffer(out_handle, (qo_len, H_qo, D), dtype)
        lse = T.match_buffer(lse_handle, (qo_len, H_qo), "float32")
        for bx in T.thread_binding((qo_len * H_qo + TX - 1) // TX, thread="blockIdx.x"):
            for tx in T.thread_binding(TX, thread="threadIdx.x"):
                with T.sblock("attn"):
                    T.reads()
                    T.writes()
                    q = T.sblock_alloc_buffer((D,), "float32", scope="local")
                    o = T.sblock_alloc_buffer((D,), "float32", scope="local")
                    s = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    m = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    m_new = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    den = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    b = T.sblock_alloc_buffer((1,), "int32", scope="local")
                    idx: T.let[T.int32] = bx * TX + tx
                    if idx < qo_len * H_qo:
                        row: T.let[T.int32] = idx // H_qo
                        h: T.let[T.int32] = idx % H_qo
                        kvh: T.let[T.int32] = h // group
                        b[0] = 0
                        for bb in T.serial(batch_size):
                            if q_indptr[bb] <= row:
                                b[0] = bb
                        q_begin: T.let[T.int32] = q_indptr[b[0]]
                        kv_begin: T.let[T.int32] = kv_indptr[b[0]]
                        n_q: T.let[T.int32] = q_indptr[b[0] + 1] - q_begin
                        n_kv: T.let[T.int32] = kv_indptr[b[0] + 1] - kv_begin
                        limit: T.let[T.int32] = T.if_then_else(
                            causal > 0, T.min(n_kv, n_kv - n_q + (row - q_begin) + 1), n_kv)
                        for d in T.unroll(D):
                            q[d] = T.Cast("float32", Q[row, h, d]) * sm_scale * T.float32(_LOG2E)
                            o[d] = T.float32(0)
                        m[0] = T.float32(-5e4)
                        den[0] = T.float32(1.0)
                        for j in T.serial(limit):
                            s[0] = T.float32(0)
                            for d in T.unroll(D):
                                s[0] = s[0] + q[d] * T.Cast("float32", K[kv_begin + j, kvh, d])
                            s[0] = score_cap(s[0], softcap)
                            m_new[0] = T.max(m[0], s[0])
                            den[0] = den[0] * T.exp2(m[0] - m_new[0]) + T.exp2(s[0] - m_new[0])
                            for d in T.unroll(D):
                                o[d] = o[d] * T.exp2(m[0] - m_new[0]) + T.exp2(s[0] - m_new[0]) * T.Cast(
                                    "float32", V[kv_begin + j, kvh, d])
                            m[0] = m_new[0]
                        for d in T.unroll(D):
                            output[row, h, d] = T.Cast(dtype, o[d] / den[0])
                        lse[row, h] = m[0] + T.log2(den[0])

    return batch_prefill_ragged_kv


def merge_state_fallback(num_heads: int, head_dim: int, dtype: str = "float32") -> tirx.PrimFunc:
    """Merge of two attention results by their ``lse`` (base 2), in place, one thread per (token, head).

    A drop-in for ``TIRPagedKVCache``'s ``tir_attention_merge_state``, which runs when a prompt's second chunk (or a
    chat's next turn) attends to the chunk itself and to the cached pages. TVM's kernel gives each head
    ``head_dim / 4`` threads and every one of them reads the head's ``lse`` and then writes the merged one, with no
    barrier between: where those threads do not run in lockstep, a later one reads the merged value. On SwiftShader
    that made every prompt prefilled in several chunks wrong for head_dim 32, 64 and 128 (not 16, whose four threads
    fit one SIMD group). Here one thread reads both ``lse``, merges the whole row and writes once.
    """
    D = head_dim
    TX = 16

    @T.prim_func(s_tir=True)
    def merge_state_inplace(v: T.handle, s: T.handle, v_other: T.handle, s_other: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        N, H = T.int32(), T.int32()
        V = T.match_buffer(v, (N, H, D), dtype)
        S = T.match_buffer(s, (N, H), "float32")
        V_other = T.match_buffer(v_other, (N, H, D), dtype)
        S_other = T.match_buffer(s_other, (N, H), "float32")
        for bx in T.thread_binding((N * H + TX - 1) // TX, thread="blockIdx.x"):
            for tx in T.thread_binding(TX, thread="threadIdx.x"):
                with T.sblock("merge"):
                    T.reads()
                    T.writes()
                    w = T.sblock_alloc_buffer((2,), "float32", scope="local")
                    idx: T.let[T.int32] = bx * TX + tx
                    if idx < N * H:
                        n: T.let[T.int32] = idx // H
                        h: T.let[T.int32] = idx % H
                        top: T.let[T.float32] = T.max(S[n, h], S_other[n, h])
                        w[0] = T.exp2(S[n, h] - top)
                        w[1] = T.exp2(S_other[n, h] - top)
                        for d in T.serial(D):
                            V[n, h, d] = T.Cast(dtype, (T.Cast("float32", V[n, h, d]) * w[0] + T.Cast(
                                "float32", V_other[n, h, d]) * w[1]) / (w[0] + w[1]))
                        S[n, h] = T.log2(w[0] + w[1]) + top

    return merge_state_inplace


def use_race_free_merge(mod: tvm.IRModule, num_qo_heads: int, head_dim: int, dtype: str = "float32") -> tvm.IRModule:
    """``mod`` with the KV cache's ``tir_attention_merge_state`` replaced by :func:`merge_state_fallback`, on every
    GPU schedule: TVM's is right only where a head's threads run in lockstep, which nothing guarantees."""
    for gv, func in list(mod.functions.items()):
        if gv.name_hint == "tir_attention_merge_state" and isinstance(func, tirx.PrimFunc):
            mod = mod.clone() if hasattr(mod, "clone") else mod
            mod[gv] = merge_state_fallback(num_qo_heads, head_dim, dtype).with_attr("global_symbol", gv.name_hint)
    return mod


def use_fallback_attention(mod: tvm.IRModule, num_kv_heads: int, num_qo_heads: int, head_dim: int,
                           dtype: str = "float32", gpu: bool = False) -> tvm.IRModule:
    """``mod`` with the KV cache's decode and ragged prefill attention kernels replaced by the barrier-free ones above
    (each with the soft cap of the kernel it replaces, :func:`.attention.kernel_softcap`), and the merge of two
    attention results by :func:`merge_state_fallback`; with ``gpu`` (hardware adapters) only the decode kernel, by
    :func:`decode_attention_gpu`. The windowed layers' kernels are the exporter's
    (:func:`.attention.use_windowed_attention`)."""
    from .attention import SOFTCAP_ATTR, kernel_softcap

    mod = use_race_free_merge(mod, num_qo_heads, head_dim, dtype)

    makers = ({"batch_decode_paged_kv": decode_attention_gpu} if gpu else
              {"batch_decode_paged_kv": decode_attention_fallback, "batch_prefill_ragged_kv": prefill_attention_fallback})
    for gv, func in list(mod.functions.items()):
        if gv.name_hint in makers and isinstance(func, tirx.PrimFunc):
            new = makers[gv.name_hint](num_kv_heads, num_qo_heads, head_dim, dtype, softcap=kernel_softcap(func))
            for key in ("global_symbol", SOFTCAP_ATTR):
                if func.attrs is not None and key in func.attrs:
                    new = new.with_attr(key, func.attrs[key])
            mod = mod.clone() if hasattr(mod, "clone") else mod
            mod[gv] = new
    return mod


#: Rules that schedule matrix products for what they are; any other rule that takes a product is TVM's generic
#: default for reductions (one workgroup per output row, or one thread per output), far slower on a real GPU.
PRODUCT_RULES = ("TokenTileGemm", "LaneGemv", "RowTileGemv", "GEMV", "Matmul")


def _rules(schedule: str) -> list:
    if schedule == "fallback":
        return [TokenTileGemm(), RowTileGemv(), RowPerThread(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]
    # dlight's Matmul declines products whose weights are decoded inside the sum (packed 4-bit codes read as
    # w[n, k // 8]): over a prompt those take the token tiles, with a workgroup of 64 threads on a real GPU.
    # One token's products: LaneGemv (rows per workgroup, lanes along the input); what it declines goes to dlight.
    return [dl.gpu.Matmul(), TokenTileGemm(threads=64, rows=4, tokens=8), LaneGemv(), dl.gpu.GEMV(), dl.gpu.Reduction(),
            dl.gpu.GeneralReduction(), dl.gpu.Fallback()]


def is_product(func: tirx.PrimFunc) -> bool:
    """Whether ``func`` holds a matrix product: a block that sums over one axis reading a 2-D function
    argument (the weight) at an index that uses both an output axis and the summed axis."""
    from tvm.s_tir.dlight.analysis import get_root_block

    sch = s_tir.Schedule(func)
    root = get_root_block(sch)
    blocks = [sch.get(b) for b in sch.get_child_blocks(root)]
    local = set(sch.get(root).alloc_buffers)  # intermediates; every other buffer is an argument
    found = []

    def visit(node):
        if not node.iter_vars:
            return
        red = [iv.var for iv in node.iter_vars if iv.iter_type == tirx.IterVar.CommReduce]
        spatial = {iv.var for iv in node.iter_vars if iv.iter_type == tirx.IterVar.DataPar}
        if len(red) != 1:
            return
        for region in node.reads:
            if region.source in local or len(region.source.shape) != 2:
                continue
            used = _region_vars(region)
            if red[0] in used and used & spatial:
                found.append(node.name_hint)

    for b in blocks:
        visit(b)
    return bool(found)


class ScheduleFallbackWarning(UserWarning):
    """A matrix product was scheduled by TVM's generic default rule instead of a product rule (slow)."""


@tvm.transform.module_pass(opt_level=0, name="WebLLMWidgetApplyRules")
class ApplyRules:
    """dlight's ``ApplyDefaultSchedule`` that keeps a record and fails loudly.

    Tries ``rules`` in order on every unscheduled PrimFunc and records, in ``report`` (function name -> rule
    class name, or None when no rule took it), which rule scheduled it. A rule that raises is a broken rule:
    :class:`ScheduleRuleError` names the function and the rule. A matrix product (:func:`is_product`) taken
    by a rule outside :data:`PRODUCT_RULES` is listed in ``report["__product_fallbacks__"]`` and warned
    about (:class:`ScheduleFallbackWarning`).
    """

    def __init__(self, rules: list, report: dict | None = None):
        self.rules = list(rules)
        self.report = report if report is not None else {}

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        import warnings

        target = tvm.target.Target.current(allow_none=False)
        updated, fallbacks = {}, []
        for gv, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or bool(func.attrs.get("tirx.is_scheduled", False)):
                continue
            name, chosen = gv.name_hint, None
            for rule in self.rules:
                try:
                    sch = rule.apply(func, func.attrs.get("target", target), False)
                except Exception as e:  # noqa: BLE001 - re-raised with the function and the rule named
                    raise ScheduleRuleError(f"schedule rule {type(rule).__name__} failed on {name}: "
                                            f"{str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)}") from e
                if sch is None:
                    continue
                sch = sch[0] if isinstance(sch, (list, tuple)) else sch
                updated[gv] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
                chosen = type(rule).__name__
                break
            self.report[name] = chosen
            if chosen not in PRODUCT_RULES and is_product(func):
                fallbacks.append(f"{name} ({chosen or 'no rule'})")
        mod = mod.clone()  # the caller's module stays as it was
        for gv, func in updated.items():
            mod[gv] = func
        self.report["__product_fallbacks__"] = fallbacks
        if fallbacks:
            warnings.warn(f"matrix products scheduled by TVM's generic rules (slow): {', '.join(fallbacks)}",
                          ScheduleFallbackWarning, stacklevel=2)
        return mod


def scheduling_passes(target: tvm.target.Target, rules: list, report: dict | None = None) -> list:
    """The passes of :func:`relax_pipeline` up to the scheduled kernels: the module they leave holds every
    kernel as the scheduled TIR ``PrimFunc`` codegen turns into WGSL (what the teaching tools show). The rules
    run through :class:`ApplyRules`; ``report``, if given, receives its record."""
    from tvm.relax.backend import gpu_generic

    return (gpu_generic.library_dispatch_passes(target)
            + [relax.transform.FuseTransposeMatmul(), relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
               relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR(),
               ApplyRules(rules, report)])


def relax_pipeline(target: tvm.target.Target, schedule: str = "auto", rules: list | None = None,
                   report: dict | None = None) -> tvm.transform.Pass:
    """TVM's generic GPU pipeline with the schedule rules for ``schedule`` (see the module doc), or with ``rules``
    given explicitly (the teaching experiments compare rules); ``report``, if given, receives
    :class:`ApplyRules`' record of which rule scheduled each function."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    from tvm.relax.backend import gpu_generic

    chosen = list(rules) if rules is not None else _rules(schedule)

    @tvm.transform.module_pass(opt_level=0, name="WebLLMWidgetPipeline")
    def pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            seq = tvm.transform.Sequential(
                scheduling_passes(target, chosen, report)
                + gpu_generic.dataflow_lower_passes(target)
                + gpu_generic.finalize_passes(target))
            return seq(mod)

    return pipeline


def schedule_pipeline(mod: tvm.IRModule, target: tvm.target.Target, schedule: str = "auto",
                      report: dict | None = None):
    """The ``relax_pipeline`` argument for ``tvm.compile``: ``"default"`` on the CPU, ours on GPUs."""
    if target.kind.name == "llvm":
        return "default"
    return relax_pipeline(target, schedule, report=report)
