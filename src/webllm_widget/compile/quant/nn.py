"""The quantization pass over an nn module: matrices swapped for modules that dequantize inside the product.

Each packed format (see ``packing.py`` for the layouts) is read by :func:`_dequant`; the linear layers and the
embedding (also the tied LM head) never hold a dequantized copy. ``q4f16_1`` converts the model to float16.

Example::

    model = quantize_module(registry.family_of(cfg).model(cfg), "q4f32_1")
    mod, named = model.export_tvm(spec=model.get_default_spec())
    expected_params(named)          # _metadata's params list
"""
from __future__ import annotations

from typing import Any, Iterable

from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from ..arch.layers import Embedding
from .modes import GROUP, Quantization, as_quantization

# ---------------------------------------------------------------------------------------------
# Dequantizing expressions shared by the linear and embedding modules.

def _dequant(fmt: str, params: list[te.Tensor], n, k, dtype: str):
    """The weight ``w[n, k]`` read out of the packed parameters, in ``dtype``."""
    if fmt == "f32":
        return params[0][n, k].astype(dtype)
    q = params[0]
    s = params[1][n, k // GROUP].astype(dtype)
    if fmt == "q8_0":
        byte = (q[n, k // 4] >> ((k % 4) * 8).astype("uint32")) & tirx.const(255, "uint32")
        return (byte.astype(dtype) - tirx.const(128, dtype)) * s
    nib = ((q[n, k // 8] >> ((k % 8) * 4).astype("uint32")) & tirx.const(15, "uint32")).astype(dtype)
    if fmt == "q4":
        return (nib - tirx.const(7, dtype)) * s
    if fmt == "q4_1":
        return nib * s + params[2][n, k // GROUP].astype(dtype)
    raise ValueError(f"unknown weight format {fmt!r}")


def _packed_params(fmt: str, n: int, k: int, dtype: str) -> dict[str, nn.Parameter]:
    if fmt == "f32":
        return {"weight": nn.Parameter((n, k), dtype)}
    sdt = "float32" if fmt in ("q4_1", "q8_0") else dtype
    per_word = 4 if fmt == "q8_0" else 8
    out = {"q_weight": nn.Parameter((n, k // per_word), "uint32"),
           "q_scale": nn.Parameter((n, k // GROUP), sdt)}
    if fmt == "q4_1":
        out["q_min"] = nn.Parameter((n, k // GROUP), "float32")
    return out


def _code(fmt: str, q: te.Tensor, n, k, dtype: str):
    """The raw integer code of ``w[n, k]`` (nibble 0..15, or byte 0..255), as ``dtype``."""
    if fmt == "q8_0":
        return ((q[n, k // 4] >> ((k % 4) * 8).astype("uint32")) & tirx.const(255, "uint32")).astype(dtype)
    return ((q[n, k // 8] >> ((k % 8) * 4).astype("uint32")) & tirx.const(15, "uint32")).astype(dtype)


#: Formats whose weight is ``code * scale + offset`` with one scale/offset per group of 32.
FACTORABLE = ("q4", "q4_1", "q8_0")


def _matvec_factored(x: Tensor, fmt: str, params: list[Tensor], n: int, k: int, out_dtype: str, name: str) -> Tensor:
    """``x @ W.T`` with the group's scale and offset taken out of the inner sum.

    ``sum_k x_k (c_k s_g + o_g) = sum_g (s_g sum_j x_j c_j + o_g sum_j x_j)``: the inner loop does one
    multiply-add per weight instead of two (on a software adapter the arithmetic per weight is most
    of a GEMV's cost). Three stages: ``part[.., n, g]`` (codes times inputs), ``xsum[.., g]`` (inputs),
    and the sum over groups; :class:`webllm_widget.compile.schedules.RowTileGemv` keeps the first two
    in registers.
    """
    acc = out_dtype
    groups = k // GROUP

    def compute(xt: te.Tensor, *ps: te.Tensor):
        lead = list(xt.shape[:-1])
        j = te.reduce_axis((0, GROUP), name="j")
        part = te.compute((*lead, n, groups), lambda *i: te.sum(
            xt[(*i[:-2], i[-1] * GROUP + j)].astype(acc) * _code(fmt, ps[0], i[-2], i[-1] * GROUP + j, acc), axis=j),
            name=name + "_part")
        j2 = te.reduce_axis((0, GROUP), name="j2")
        xsum = te.compute((*lead, groups), lambda *i: te.sum(
            xt[(*i[:-1], i[-1] * GROUP + j2)].astype(acc), axis=j2), name=name + "_xsum")
        g = te.reduce_axis((0, groups), name="g")

        def body(*i):
            row = i[-1]
            s = ps[1][row, g].astype(acc)
            if fmt == "q4_1":
                off = ps[2][row, g].astype(acc)
            else:
                off = s * tirx.const(-7.0 if fmt == "q4" else -128.0, acc)
            return te.sum(part[(*i, g)] * s + xsum[(*i[:-1], g)] * off, axis=g)

        return te.compute((*lead, n), body, name=name)

    return op.tensor_expr_op(compute, name, [x, *params])


def _matvec(x: Tensor, fmt: str, params: list[Tensor], n: int, k: int, out_dtype: str, name: str,
            factored: bool = False, glu: bool = False, norm: tuple[Tensor, float] | None = None) -> Tensor:
    """``x @ W.T`` with W dequantized inside the reduction (no dequantized copy is ever stored).

    ``glu``: ``x`` is a gate/up product ``[.., 2k]`` and the input of the product is ``silu(gate) * up``, computed
    where each input is read (the SwiGLU that otherwise runs as a kernel of its own between the two products).

    ``norm``: ``(weight, eps)`` of an RMSNorm of ``x`` taken into the product, ``rsqrt(mean(x^2) + eps) *
    sum_k x_k g_k W[n, k]``: one reduction of two sums (``x^2`` and the product) walking the same inputs, the
    scalar applied to the result (exact up to rounding; both sums in float32). A separate norm kernel costs ~10 us
    of wall time a launch on an H100 and one-token decode launched 2 a layer + 1 (61 a SmolLM2-135M token)."""
    if norm is not None:
        if glu or factored:
            raise ValueError("a norm is fused only into a plain (unfactored, non-SwiGLU) product")
        return _matvec_normed(x, fmt, params, n, k, out_dtype, name, norm)
    if factored and fmt in FACTORABLE and k % GROUP == 0 and not glu:
        return _matvec_factored(x, fmt, params, n, k, out_dtype, name)
    acc = out_dtype

    def compute(xt: te.Tensor, *ps: te.Tensor):
        r = te.reduce_axis((0, k), name="k")
        lead = list(xt.shape[:-2] if glu else xt.shape[:-1])

        def read(idx):
            if not glu:
                return xt[(*idx[:-1], r)].astype(acc)
            g = xt[(*idx[:-1], 0, r)].astype(acc)
            return g * tirx.sigmoid(g) * ps[0][(*idx[:-1], 1, r)].astype(acc)

        def body(*idx):
            row = idx[-1]
            return te.sum(read(idx) * _dequant(fmt, list(ps[1:] if glu else ps), row, r, acc), axis=r)

        return te.compute((*lead, n), body, name=name)

    # glu: the product is passed twice, gate read from the first and up from the second, so that each read is of
    # one element (TVM's GEMV schedule takes a vector read of several elements for a broken access)
    return op.tensor_expr_op(compute, name, [x, x, *params] if glu else [x, *params])


def _matvec_normed(x: Tensor, fmt: str, params: list[Tensor], n: int, k: int, out_dtype: str, name: str,
                   norm: tuple[Tensor, float]) -> Tensor:
    """``rms_norm(x, g, eps) @ W.T`` as one reduction with two sums (see :func:`_matvec`'s ``norm``).

    The two sums are one block (a tuple reducer), so that the schedule that walks ``k`` for a row's product
    (:class:`webllm_widget.compile.schedules.LaneGemv`) accumulates ``x^2`` in the same loop and adds the lanes'
    partial sums of both in the same cross-thread reduction."""
    weight, eps = norm
    acc = "float32"
    pair = te.comm_reducer(lambda a, b: (a[0] + b[0], a[1] + b[1]),
                           lambda t0, t1: (tirx.const(0, t0), tirx.const(0, t1)), name="sum_pair")

    def compute(xt: te.Tensor, gt: te.Tensor, *ps: te.Tensor):
        r = te.reduce_axis((0, k), name="k")
        lead = list(xt.shape[:-1])

        def body(*idx):
            xv = xt[(*idx[:-1], r)].astype(acc)
            w = _dequant(fmt, list(ps), idx[-1], r, acc)
            return pair((xv * xv, xv * gt[r].astype(acc) * w), axis=r)

        sq, prod = te.compute((*lead, n), body, name=name + "_sums")
        inv_k = tirx.const(1.0 / k, acc)
        return te.compute((*lead, n), lambda *i: (prod[i] * tirx.rsqrt(sq[i] * inv_k + tirx.const(eps, acc)))
                          .astype(out_dtype), name=name)

    return op.tensor_expr_op(compute, name, [x, weight, *params])


def norm_fits(n: int, k: int) -> bool:
    """Whether a one-token product of ``n`` rows over ``k`` inputs may take in its input's RMSNorm: where the
    hardware schedule's :class:`~webllm_widget.compile.schedules.LaneGemv` tiles it (elsewhere the two-sum
    reduction would go to TVM's generic rules, slower than the separate norm)."""
    from ..schedules import LaneGemv

    return LaneGemv().tiling(n, k) is not None


def _norm_of(norm: nn.Module) -> tuple[Tensor, float]:
    """``(weight, eps)`` of a plain RMSNorm over the last axis (no bias); anything else is refused."""
    axes = norm.axes if isinstance(norm.axes, (list, tuple)) else [norm.axes]
    if type(norm) is not nn.RMSNorm or norm.bias is not None or list(axes) != [-1]:
        raise ValueError(f"only a plain RMSNorm over the last axis fuses into a product, not {type(norm).__name__}")
    return norm.weight, float(norm.epsilon)


def _normed_linear(x: Tensor, norm: nn.Module, fmt: str, params: list[Tensor], n: int, k: int, out_dtype: str,
                   name: str, bias: Tensor | None) -> Tensor:
    """``rms_norm(x) W^T (+ b)``: the product with the norm inside (:func:`_matvec`'s ``norm``), then the bias."""
    y = _matvec(x, fmt, params, n, k, out_dtype, name, norm=_norm_of(norm))
    return y if bias is None else y + bias


class QuantizedLinear(nn.Module):
    """``y = x W^T (+ b)`` with W stored in a packed format and dequantized on the fly."""

    def __init__(self, in_features: int, out_features: int, fmt: str, dtype: str, bias: bool,
                 out_dtype: str | None = None, factored: bool = False):
        self.in_features, self.out_features, self.fmt, self.factored = in_features, out_features, fmt, factored
        self.dtype, self.out_dtype = dtype, out_dtype or dtype
        self._names = list(_packed_params(fmt, out_features, in_features, dtype))
        for pname, p in _packed_params(fmt, out_features, in_features, dtype).items():
            setattr(self, pname, p)
        self.bias = nn.Parameter((out_features,), self.out_dtype) if bias else None

    #: Whether :meth:`forward_glu` may take the SwiGLU into the product (:func:`quantize_module`'s ``fuse_glu``).
    fuse_glu = False

    def forward(self, x: Tensor) -> Tensor:
        y = _matvec(x, self.fmt, [getattr(self, p) for p in self._names], self.out_features,
                    self.in_features, self.out_dtype, f"dequant_matmul_{self.fmt}", self.factored)
        if self.bias is not None:
            y = y + self.bias
        return y

    #: Whether :meth:`forward_norm` may take the RMSNorm of the input into the product (``quantize_module``'s ``fuse_norm``).
    fuse_norm = False

    def forward_norm(self, x: Tensor, norm: nn.Module) -> Tensor:
        """``rms_norm(x) W^T (+ b)`` in one kernel (``norm``: a plain :class:`nn.RMSNorm`; see :func:`_matvec`)."""
        return _normed_linear(x, norm, self.fmt, [getattr(self, p) for p in self._names], self.out_features,
                              self.in_features, self.out_dtype, f"dequant_norm_matmul_{self.fmt}", self.bias)

    def forward_glu(self, gate_up: Tensor) -> Tensor:
        """``(silu(gate) * up) W^T (+ b)`` from the stacked ``gate_up`` product ``[.., 2 in_features]``, in one kernel."""
        gate_up = op.reshape(gate_up, (*gate_up.shape[:-1], 2, self.in_features))  # [.., gate | up, k]: a view
        y = _matvec(gate_up, self.fmt, [getattr(self, p) for p in self._names], self.out_features,
                    self.in_features, self.out_dtype, f"dequant_glu_matmul_{self.fmt}", glu=True)
        if self.bias is not None:
            y = y + self.bias
        return y


class QuantizedEmbedding(nn.Module):
    """Token embedding in a packed format; also the tied LM head (dequantized inside the reduction)."""

    def __init__(self, vocab_size: int, hidden_size: int, fmt: str, dtype: str, factored: bool = False):
        self.vocab_size, self.hidden_size, self.fmt, self.dtype = vocab_size, hidden_size, fmt, dtype
        self.factored = factored
        self._names = list(_packed_params(fmt, vocab_size, hidden_size, dtype))
        for pname, p in _packed_params(fmt, vocab_size, hidden_size, dtype).items():
            setattr(self, pname, p)

    def forward(self, ids: Tensor) -> Tensor:
        fmt, dtype, h = self.fmt, self.dtype, self.hidden_size

        def compute(idt: te.Tensor, *ps: te.Tensor):
            return te.compute((idt.shape[0], h), lambda i, j: _dequant(fmt, list(ps), idt[i], j, dtype),
                              name="dequant_take")

        return op.tensor_expr_op(compute, f"dequant_take_{fmt}", [ids, *[getattr(self, p) for p in self._names]])

    def lm_head_forward(self, x: Tensor) -> Tensor:
        return _matvec(x, self.fmt, [getattr(self, p) for p in self._names], self.vocab_size,
                       self.hidden_size, "float32", f"dequant_lm_head_{self.fmt}", self.factored)

    #: Whether :meth:`lm_head_norm_forward` may take the final RMSNorm into the LM head (``fuse_norm``).
    fuse_norm = False

    def lm_head_norm_forward(self, x: Tensor, norm: nn.Module) -> Tensor:
        """The tied LM head of ``norm(x)`` in one kernel (see :func:`_matvec`'s ``norm``)."""
        return _matvec(x, self.fmt, [getattr(self, p) for p in self._names], self.vocab_size,
                       self.hidden_size, "float32", f"dequant_norm_lm_head_{self.fmt}", norm=_norm_of(norm))


class FloatLinear(nn.Linear):
    """A float ``nn.Linear`` (same parameters, same ``forward``) whose one-token product can take in the RMSNorm of its
    input (:meth:`forward_norm`); what ``quantize_module(fuse_norm=True)`` leaves of a ``q0f32`` model's linears."""

    fuse_norm = True

    def forward_norm(self, x: Tensor, norm: nn.Module) -> Tensor:
        """``rms_norm(x) W^T (+ b)`` in one kernel (see :func:`_matvec`'s ``norm``)."""
        return _normed_linear(x, norm, "f32", [self.weight], int(self.out_features), int(self.in_features),
                              self.out_dtype or self.weight.dtype, "norm_matmul_f32", self.bias)


class FloatEmbedding(Embedding):
    """A float :class:`Embedding` whose tied LM head can take in the final RMSNorm (:meth:`lm_head_norm_forward`)."""

    fuse_norm = True

    def lm_head_norm_forward(self, x: Tensor, norm: nn.Module) -> Tensor:
        """The tied LM head of ``norm(x)`` in one kernel (see :func:`_matvec`'s ``norm``)."""
        return _matvec(x, "f32", [self.weight], self.vocab_size, self.hidden_size, "float32", "norm_lm_head_f32",
                       norm=_norm_of(norm))


def quantize_module(model: nn.Module, quant: Quantization | str, *, factored: bool = False,
                    fuse_glu: bool = False, fuse_norm: bool = False) -> nn.Module:
    """Replace the model's matrices by packed versions for ``quant`` (in place; returns the model).

    Norms and biases stay in the compute dtype. ``q4f16_1`` converts the model to float16 first.
    ``factored`` computes the matrix-vector products with the group scale/offset outside the inner
    sum (see :func:`_matvec_factored`; the software-adapter schedules are written for it). ``fuse_glu``
    lets an MLP's down projection read ``silu(gate) * up`` straight from the gate/up product
    (:meth:`QuantizedLinear.forward_glu`; one kernel a layer fewer where the MLP asks for it). ``fuse_norm`` lets
    the products that read an RMSNorm's output compute the norm themselves (:meth:`QuantizedLinear.forward_norm`,
    :meth:`QuantizedEmbedding.lm_head_norm_forward`; where the decoder asks for it, on one token); a ``q0f32`` model's
    float linears and embedding become :class:`FloatLinear` / :class:`FloatEmbedding` for that (same parameters).
    """
    quant = as_quantization(quant)
    if quant.compute_dtype != "float32":
        model.to(quant.compute_dtype)
    dtype = quant.compute_dtype

    def walk(node: nn.Module, prefix: str) -> None:
        for attr, child in list(vars(node).items()):
            path = f"{prefix}{attr}"
            if isinstance(child, nn.ModuleList):
                for i, sub in enumerate(child):
                    walk(sub, f"{path}.{i}.")
            elif isinstance(child, nn.Linear):
                fmt = quant.format_of(path, int(child.in_features))
                if fmt != "f32" or quant.name != "q0f32":
                    q = QuantizedLinear(int(child.in_features), int(child.out_features), fmt,
                                        dtype, child.bias is not None, child.out_dtype, factored)
                    q.fuse_glu = fuse_glu
                    q.fuse_norm = fuse_norm and norm_fits(q.out_features, q.in_features)
                    setattr(node, attr, q)
                elif fuse_norm and norm_fits(int(child.out_features), int(child.in_features)):
                    # a float model keeps nn.Linear's product; its one-token products may still take in the norm
                    setattr(node, attr, FloatLinear(int(child.in_features), int(child.out_features),
                                                    child.bias is not None, child.weight.dtype, child.out_dtype))
            elif isinstance(child, Embedding):
                fmt = quant.format_of(path, child.hidden_size)
                fits = fuse_norm and norm_fits(child.vocab_size, child.hidden_size)
                if fmt != "f32" or quant.name != "q0f32":
                    e = QuantizedEmbedding(child.vocab_size, child.hidden_size, fmt, dtype, factored)
                    e.fuse_norm = fits
                    setattr(node, attr, e)
                elif fits:
                    setattr(node, attr, FloatEmbedding(child.vocab_size, child.hidden_size))
            elif isinstance(child, nn.Module):
                walk(child, f"{path}.")

    walk(model, "")
    return model



def expected_params(named_params: Iterable[tuple[str, nn.Parameter]]) -> list[dict[str, Any]]:
    """``_metadata``'s ``params`` list: name, shape and dtype of each parameter, in call order."""
    return [{"name": n, "shape": [int(s) for s in p.shape], "dtype": str(p.dtype)} for n, p in named_params]
