"""Building blocks every family shares: the token embedding that doubles as a tied LM head, and the last-token pick.

The quantization pass (``compile/quant/nn.py``) recognises :class:`Embedding` and swaps it for its packed twin,
so a family that uses it gets every weight format for free.
"""
from __future__ import annotations

from tvm import te
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
