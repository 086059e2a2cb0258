"""What the page measured running a model library (:meth:`webllm_widget.WebGPU.profile`), as tables and plots.

One decode step is the unit: the model's forward pass for one token and web-llm's sampling on the GPU, ending
when the sampled id is back on the CPU. ``dispatches`` has one row per compute pass of that step (TVM launches
one kernel per pass) with its GPU time from timestamp queries; ``step_ms`` is the step's wall time, so the gap
between the two is the time the GPU waited for the page (encoding, submits, the read-back).

The roofline puts each kernel at its arithmetic intensity (FLOPs from TVM's ``estimate_tir_flops`` on the
scheduled TIR, over the bytes of the buffers bound to the dispatch: exact for the matrix-vector products, which
read every weight once; an upper bound for kernels that read part of a buffer, such as attention over the KV
cache) and its achieved FLOP/s, under the adapter's two measured roofs.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .sources import KernelSource, function_of


@dataclass
class ModelProfile:
    model_id: str
    folder: Path | None
    #: "timestamp-query around every compute pass", or wall clock only (then GPU times are missing).
    method: str
    timestamps: bool
    #: The adapter's measured roofs: ``read_GBps`` and ``fma_GFLOPs`` (and how they were measured).
    peaks: dict
    prompt_tokens: int
    #: Wall time of each profiled decode step, ms.
    step_walls_ms: list[float]
    #: Raw passes of each decode step and prefill chunk as the page sent them.
    decode_passes: list[list[dict]] = field(repr=False)
    prefill_passes: list[list[dict]] = field(repr=False)
    prefill_walls_ms: list[float] = field(repr=False)
    wgsl_sources: dict[str, str] = field(repr=False)
    sources: dict[str, KernelSource] | None = field(repr=False, default=None)
    #: Why ``sources`` is None (a folder not built by webllm-widget, ...).
    sources_note: str = ""
    #: Bytes of model files the page had to put in its cache for this profile (0 when a Chat had loaded them).
    bytes_installed: int = 0

    @classmethod
    def from_page(cls, msg: dict, folder: Path | None, sources: dict[str, KernelSource] | None,
                  sources_note: str = "") -> "ModelProfile":
        return cls(model_id=str(msg.get("model_id", "")), folder=folder, method=str(msg["method"]),
                   timestamps=bool(msg["timestamps"]), peaks=dict(msg["peaks"]),
                   prompt_tokens=int(msg["prompt_tokens"]), step_walls_ms=[float(d["wall_ms"]) for d in msg["decode"]],
                   decode_passes=[d["passes"] for d in msg["decode"]], prefill_passes=[d["passes"] for d in msg["prefill"]],
                   prefill_walls_ms=[float(d["wall_ms"]) for d in msg["prefill"]], wgsl_sources=dict(msg["wgsl"]),
                   sources=sources, sources_note=sources_note, bytes_installed=int(msg.get("bytes_installed") or 0))

    # -- the decode step --------------------------------------------------------------------------

    @property
    def step_index(self) -> int:
        """The decode step the tables show: the one with the median wall time."""
        order = sorted(range(len(self.step_walls_ms)), key=lambda i: self.step_walls_ms[i])
        return order[len(order) // 2]

    @property
    def step_ms(self) -> float:
        """Wall time of the decode step the tables show, ms."""
        return self.step_walls_ms[self.step_index]

    @property
    def gpu_ms(self) -> float | None:
        """Sum of the GPU times of that step's dispatches, ms (None without timestamp queries)."""
        if not self.timestamps:
            return None
        return sum((p["ns"] or 0) for p in self.decode_passes[self.step_index]) / 1e6

    def _table(self, passes: list[dict]):
        import pandas as pd

        rows = []
        for i, p in enumerate(passes):
            fn = function_of(p["name"])
            src = (self.sources or {}).get(fn)
            ms = p["ns"] / 1e6 if p.get("ns") is not None and self.timestamps else None
            flops = src.flops if src else None
            nbytes = int(p["bytes"])
            rows.append({
                "index": i, "kernel": p["name"], "function": fn, "gpu_ms": ms,
                "workgroups": tuple(int(x) for x in p["workgroups"]), "bytes": nbytes, "flops": flops,
                "intensity": flops / nbytes if flops and nbytes else None,
                "GBps": nbytes / (ms * 1e-3) / 1e9 if ms else None,
                "GFLOPs": flops / (ms * 1e-3) / 1e9 if ms and flops else None,
            })
        return pd.DataFrame(rows).set_index("index")

    @property
    def dispatches(self):
        """One row per dispatch of the decode step: kernel, TIR function, GPU ms, workgroups, bytes bound, FLOPs,
        arithmetic intensity, achieved GB/s and GFLOP/s (a pandas DataFrame)."""
        return self._table(self.decode_passes[self.step_index])

    @property
    def prefill(self):
        """The same table for the first prefill chunk."""
        return self._table(self.prefill_passes[0]) if self.prefill_passes else self._table([])

    @property
    def kernels(self):
        """Dispatches of the decode step grouped by kernel: calls, total GPU ms, share of the step's GPU time."""
        d = self.dispatches
        g = d.groupby("kernel").agg(calls=("function", "size"), gpu_ms=("gpu_ms", "sum"), bytes=("bytes", "sum"),
                                    flops=("flops", "sum"))
        total = g["gpu_ms"].sum()
        g["share"] = g["gpu_ms"] / total if total else None
        return g.sort_values("gpu_ms", ascending=False)

    # -- sources --------------------------------------------------------------------------------

    def wgsl(self, kernel: str) -> str:
        """The WGSL the page compiled for ``kernel`` (a WGSL entry point, or its TIR function's name)."""
        for name in (kernel, f"{kernel}_kernel"):
            if name in self.wgsl_sources:
                return self.wgsl_sources[name]
        raise KeyError(f"no kernel {kernel!r}; kernels: {', '.join(sorted(self.wgsl_sources))}")

    def tir(self, kernel: str) -> str:
        """The scheduled TIR ``kernel`` came from (TVMScript)."""
        if self.sources is None:
            raise LookupError(f"no TIR for this model: {self.sources_note}")
        return self.sources[function_of(kernel)].tir

    # -- plots --------------------------------------------------------------------------------------

    def plot(self, top: int = 12, ax: Any = None):
        """Bar chart of the decode step's kernels by total GPU time."""
        import matplotlib.pyplot as plt

        k = self.kernels.head(top)[::-1]
        if ax is None:
            _, ax = plt.subplots(figsize=(8, 0.35 * len(k) + 1.2))
        ax.barh(list(k.index), list(k["gpu_ms"]))
        ax.set_xlabel("GPU ms in one decode step")
        ax.set_title(f"{self.model_id}: decode step {self.step_ms:.1f} ms wall, "
                     f"{self.gpu_ms or 0:.1f} ms on the GPU, {len(self.dispatches)} dispatches")
        ax.figure.tight_layout()
        return ax.figure

    def roofline(self, ax: Any = None):
        """Each kernel of the decode step at (FLOPs per byte, achieved GFLOP/s) under the adapter's roofs."""
        import matplotlib.pyplot as plt
        import numpy as np

        d = self.dispatches.dropna(subset=["intensity", "GFLOPs"])
        bw, peak = float(self.peaks["read_GBps"]), float(self.peaks["fma_GFLOPs"])
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4.5))
        lo = min([0.01, *list(d["intensity"])]) / 2
        hi = max([4 * peak / bw, *list(d["intensity"])]) * 2
        x = np.logspace(np.log10(lo), np.log10(hi), 200)
        ax.plot(x, np.minimum(peak, x * bw), color="k", lw=1.5,
                label=f"roofs: {bw:.1f} GB/s read, {peak:.1f} GFLOP/s FMA (measured)")
        for kernel, grp in d.groupby("kernel"):
            ax.scatter(grp["intensity"], grp["GFLOPs"], s=18, label=kernel if len(d["kernel"].unique()) <= 12 else None)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (FLOPs / byte bound)")
        ax.set_ylabel("achieved GFLOP/s")
        ax.set_title(f"{self.model_id}: roofline of one decode step")
        ax.legend(fontsize=7, loc="lower right")
        ax.figure.tight_layout()
        return ax.figure

    def summary(self) -> dict:
        """The numbers a reader checks first."""
        gpu = self.gpu_ms
        return {"model": self.model_id, "method": self.method, "step_ms": self.step_ms,
                "step_ms_all": self.step_walls_ms, "gpu_ms": gpu,
                "gpu_share_of_step": gpu / self.step_ms if gpu is not None else None,
                "dispatches": len(self.decode_passes[self.step_index]), "kernels": len(set(
                    p["name"] for p in self.decode_passes[self.step_index])),
                "read_GBps": self.peaks["read_GBps"], "fma_GFLOPs": self.peaks["fma_GFLOPs"],
                "prompt_tokens": self.prompt_tokens, "prefill_ms": statistics.fsum(self.prefill_walls_ms)}

    def _repr_html_(self) -> str:
        import html

        s = self.summary()
        share = f"{s['gpu_share_of_step']:.0%}" if s["gpu_share_of_step"] is not None else "unknown"
        head = (f"<b>{html.escape(self.model_id)}</b>: decode step {s['step_ms']:.1f} ms wall, GPU busy {share} of it, "
                f"{s['dispatches']} dispatches of {s['kernels']} kernels; adapter {s['read_GBps']:.1f} GB/s, "
                f"{s['fma_GFLOPs']:.1f} GFLOP/s ({html.escape(self.method)})")
        return f"<div>{head}</div>" + self.kernels.head(10).to_html(float_format=lambda v: f"{v:.3g}")
