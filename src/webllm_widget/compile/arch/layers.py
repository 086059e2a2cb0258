"""Building blocks every family shares: the token embedding that doubles as a tied LM head, the last-token pick, and
RoPE applied by the model (for RoPE variants the paged KV cache does not compute).

The quantization pass (``compile/quant/nn.py``) recognises :class:`Embedding` and swaps it for its packed twin,
so a family that uses it gets every weight format for free.
"""
from __future__ import annotations

import numpy as np
from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op


def last_token(x: Tensor) -> Tensor:
    """[b, s, h] -> [b, 1, h]: prefill only needs the logits of the last position."""
    def compute(t: te.Tensor):
        b, s, h = t.shape
        return te.compute((b, 1, h), lambda i, _, k: t[i, s - 1, k], name="index_last_token")

    return op.tensor_expr_op(compute, "index_last_token", [x])


class Embedding(nn.Module):
    """Token embedding; when the LM head is tied it also computes logits from the same table."""

    def __init__(self, vocab_size: int, hidden_size: int):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.weight = nn.Parameter((vocab_size, hidden_size))

    def forward(self, ids: Tensor) -> Tensor:
        return op.take(self.weight, ids, axis=0)

    def lm_head_forward(self, x: Tensor) -> Tensor:
        return op.matmul(x, op.permute_dims(self.weight), out_dtype="float32")


def rotate_half(qkv: Tensor, positions: Tensor, inv_freq: np.ndarray, gain: float, rotated_heads: int) -> Tensor:
    """Rotate-half RoPE on the first ``rotated_heads`` heads of ``qkv`` [b, s, heads, d]: dims i and i + d/2 turn
    by ``position * inv_freq[i]``, and both cos and sin are multiplied by ``gain``. ``positions``: [b * s] int32."""
    freqs = Tensor.from_const(np.asarray(inv_freq, dtype="float32"))

    def compute(x: te.Tensor, pos: te.Tensor, f: te.Tensor):
        b, s, h, d = x.shape
        half = d // 2

        def body(i, j, k, c):
            angle = pos[i * s + j].astype("float32") * f[c % half]
            other = tirx.if_then_else(c < half, -x[i, j, k, c + half], x[i, j, k, c - half])
            turned = (tirx.cos(angle) * x[i, j, k, c] + tirx.sin(angle) * other) * tirx.const(gain, "float32")
            return tirx.if_then_else(k < rotated_heads, turned.astype(x.dtype), x[i, j, k, c])

        return te.compute(x.shape, body, name="rope_by_model")

    return op.tensor_expr_op(compute, "rope_by_model", [qkv, positions, freqs])
