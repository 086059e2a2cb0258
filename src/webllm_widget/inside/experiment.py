"""A live schedule experiment on one of the model's matrix-vector products.

The product is made with the model's own code (``QuantizedLinear`` of :mod:`webllm_widget.compile.quant.nn`, the
module the model's layers use) at the model's shape and weight format, with the dequantization written as the
model library writes it for its schedule. Each variant compiles it with one list of schedule rules: TVM's default
GPU rule (dlight's ``GEMV``) or the project's :class:`~webllm_widget.compile.schedules.RowTileGemv` with a tile of
``rows`` output rows per thread. Every variant records which rule actually scheduled the product (a rule that
does not match falls through to the next one, and the table says so), is checked against numpy on random packed
weights (``x @ dequantize(W).T``, :func:`webllm_widget.compile.quant.packing.dequantize`), and is timed on the
page's GPU with :meth:`webllm_widget.WebGPU.time`.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Variant:
    """One way to schedule the product: a label, the TVM rules in order, and the tile it asks for."""

    label: str
    rules: tuple
    rows: int | None = None
    threads: int | None = None
    #: Write the product with the group scale outside the inner sum (the form the fallback library uses); None:
    #: as the model's library does.
    factored: bool | None = None


def default_variants(rows: tuple[int, ...] = (1, 2, 4), threads: int = 16) -> list[Variant]:
    """TVM's default GEMV rule, then the project's row-tiled rule at each tile size."""
    from tvm.s_tir import dlight as dl

    from ..compile.schedules import RowTileGemv

    # dlight's GEMV rule matches the plain product (one reduction), not the factored one
    out = [Variant("TVM default (dlight GEMV)", (dl.gpu.GEMV(), dl.gpu.Fallback()), factored=False)]
    for r in rows:
        out.append(Variant(f"RowTileGemv rows={r}", (RowTileGemv(threads=threads, rows=r), dl.gpu.Fallback()), r, threads))
    return out


def _recording(rules: tuple, seen: list[str]) -> list:
    """The rules, each wrapped to note its class name in ``seen`` when it schedules a function."""
    from tvm.s_tir import dlight as dl

    class Noting(dl.ScheduleRule):
        def __init__(self, rule: Any):
            self.rule = rule

        def apply(self, func, target, tunable):  # noqa: D102
            out = self.rule.apply(func, target, tunable)
            if out is not None:
                seen.append(type(self.rule).__name__)
            return out

    return [Noting(r) for r in rules]


@dataclass
class ScheduleExperiment:
    """``ScheduleExperiment.for_model(folder)`` picks the gate/up product of ``folder``'s model; ``await
    exp.run(gpu)`` builds, checks and times every variant and returns a DataFrame; ``exp.plot()`` draws it."""

    k: int
    n: int
    fmt: str
    factored: bool
    what: str
    variants: list[Variant] = field(default_factory=default_variants)
    results: list[dict] = field(default_factory=list)

    @classmethod
    def for_model(cls, folder: str | Path, *, layer: str = "model.layers.0.mlp.gate_up_proj",
                  variants: list[Variant] | None = None) -> "ScheduleExperiment":
        """The product of module ``layer`` (default: the first layer's gate/up matrix) of the model in ``folder``."""
        from ..compile.quant.modes import Quantization
        from .sources import _build_info

        info = _build_info(Path(folder))
        mc = info["config"]
        k, inter = int(mc["hidden_size"]), int(mc["intermediate_size"])
        shapes = {"mlp.gate_up_proj": (2 * inter, k), "mlp.down_proj": (k, inter)}
        n, k_in = next((v for suffix, v in shapes.items() if layer.endswith(suffix)), (None, None))
        if n is None:
            raise ValueError(f"layer {layer!r}: pick an mlp.gate_up_proj or mlp.down_proj module")
        quant = Quantization.from_key(info["quantization"])
        fmt = quant.format_of(layer, k_in)
        return cls(k=k_in, n=n, fmt=fmt, factored=info["schedule"] == "fallback",
                   what=f"{layer} of {info['model_type']}: {n}x{k_in} {fmt}",
                   variants=variants or default_variants())

    def module(self, factored: bool | None = None):
        """The Relax module of the product alone, for one token: ``forward(x[1, 1, k], *packed weights)``."""
        from tvm.relax.frontend import nn

        from ..compile.quant.nn import QuantizedLinear

        lin = QuantizedLinear(self.k, self.n, self.fmt, "float32", bias=False,
                              factored=self.factored if factored is None else factored)
        mod, params = lin.export_tvm(spec={"forward": {"x": nn.spec.Tensor([1, 1, self.k], "float32")}})
        return mod, [name for name, _ in params]

    def inputs(self, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """Random activations and packed weights, and numpy's ``x @ W.T`` for them."""
        from ..compile.quant.modes import GROUP
        from ..compile.quant.packing import dequantize

        rng = np.random.default_rng(seed)
        x = rng.standard_normal((1, 1, self.k)).astype(np.float32)
        per_word = 4 if self.fmt == "q8_0" else 8
        packed: dict[str, np.ndarray] = {}
        if self.fmt == "f32":
            packed["weight"] = (rng.standard_normal((self.n, self.k)) * 0.05).astype(np.float32)
        else:
            packed["q_weight"] = rng.integers(0, 2**32, (self.n, self.k // per_word), dtype=np.uint64).astype(np.uint32)
            packed["q_scale"] = rng.uniform(0.005, 0.02, (self.n, self.k // GROUP)).astype(np.float32)
            if self.fmt == "q4_1":
                packed["q_min"] = rng.uniform(-0.1, 0.0, (self.n, self.k // GROUP)).astype(np.float32)
        ref = x @ dequantize(self.fmt, packed).T
        return x, packed, ref

    def build(self, variant: Variant):
        """Compile and link the product with ``variant``'s rules; returns (library, rules that applied)."""
        from ..compile import build
        from ..compile.model_lib import webgpu_target
        from ..compile.schedules import relax_pipeline

        import warnings

        from ..compile.schedules import ScheduleFallbackWarning

        mod, _ = self.module(variant.factored)
        seen: list[str] = []
        with warnings.catch_warnings():  # a variant may ask for the generic rules; its table row names the rule
            warnings.simplefilter("ignore", ScheduleFallbackWarning)
            lib = build(mod, pipeline=relax_pipeline(webgpu_target(), rules=_recording(variant.rules, seen)),
                        name=f"product-{variant.label}", progress=False)
        return lib, seen

    async def run(self, gpu: Any, *, repeat: int = 10, seed: int = 0):
        """Build, check against numpy and time every variant on ``gpu``'s page; returns a pandas DataFrame."""
        import pandas as pd

        x, packed, ref = self.inputs(seed)
        _, names = self.module()
        args = [x] + [packed[n] for n in names]
        weight_bytes = sum(a.nbytes for a in packed.values())
        self.results = []
        for v in self.variants:
            lib, seen = self.build(v)
            f = gpu.load(lib, "forward")
            y = await f(*args)
            err = float(np.abs(np.asarray(y).reshape(ref.shape) - ref).max())
            t = await gpu.time(f, *args, repeat=repeat)
            ms = statistics.median(t.runs_ms)
            self.results.append({
                "variant": v.label, "rows": v.rows, "threads": v.threads,
                "factored": self.factored if v.factored is None else v.factored,
                "scheduled_by": ", ".join(sorted(set(seen))) or "none",
                "ms": ms, "GBps": weight_bytes / (ms * 1e-3) / 1e9, "max_abs_err": err,
                "matches_numpy": bool(err <= 1e-3 * max(1.0, float(np.abs(ref).max()))),
                "timing": t.method, "wgsl_lines": sum(s.count("\n") for s in lib.wgsl.values()),
            })
        return self.table()

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.results)

    def plot(self, ax: Any = None):
        """GPU time of the product against the tile (rows per thread), TVM's default as a line."""
        import matplotlib.pyplot as plt

        t = self.table()
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.8))
        tiled = t[t["rows"].notna()]
        ax.plot(tiled["rows"], tiled["ms"], "o-", label="RowTileGemv (rows per thread)")
        for _, r in t[t["rows"].isna()].iterrows():
            ax.axhline(r["ms"], color="gray", ls="--", label=r["variant"])
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(tiled["rows"]), [str(int(r)) for r in tiled["rows"]])
        ax.set_xlabel("output rows per thread")
        ax.set_ylabel("GPU ms (median)")
        ax.set_title(self.what)
        ax.legend(fontsize=8)
        ax.figure.tight_layout()
        return ax.figure
