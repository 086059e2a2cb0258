"""Packed weight layouts in numpy: 4-/8-bit codes into uint32 words, the ``q4`` quantizer, and the inverse.

Layouts (per output row; ``K`` = input features, a multiple of 32):

=========  ==========================================  =================================
format     parameters                                  weight ``w[n, k]``
=========  ==========================================  =================================
``q4``     ``q_weight`` u32 [N, K/8], ``q_scale`` [N, K/32]          ``(nib - 7) * s``
``q4_1``   ``q_weight`` u32 [N, K/8], ``q_scale``, ``q_min`` f32 [N, K/32]  ``nib * s + m``
``q8_0``   ``q_weight`` u32 [N, K/4], ``q_scale`` f32 [N, K/32]     ``(byte - 128) * s``
``f32``    ``weight`` [N, K] in the compute dtype                    ``weight``
=========  ==========================================  =================================

Nibble ``k`` of a row sits in word ``k // 8`` at bit ``4 * (k % 8)``; byte ``k`` of a Q8_0 row

Nibble ``k`` of a row sits in word ``k // 8`` at bit ``4 * (k % 8)``; byte ``k`` of a Q8_0 row
in word ``k // 4`` at bit ``8 * (k % 4)`` (stored biased by 128: WebGPU has no 8-bit storage).
:func:`dequantize` is what the kernels compute, so tests can compare a build against exact weights.
"""
from __future__ import annotations

import numpy as np

from .modes import GROUP

def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """uint8 values 0..15, shape [N, K] -> uint32 [N, K/8] (element k at bit 4*(k%8) of word k//8)."""
    q = q.astype(np.uint32).reshape(q.shape[0], -1, 8)
    return np.bitwise_or.reduce(q << (np.arange(8, dtype=np.uint32) * 4), axis=-1)


def _pack_bytes(q: np.ndarray) -> np.ndarray:
    """uint8 values, shape [N, K] -> uint32 [N, K/4] (byte k at bit 8*(k%4) of word k//4)."""
    q = q.astype(np.uint32).reshape(q.shape[0], -1, 4)
    return np.bitwise_or.reduce(q << (np.arange(4, dtype=np.uint32) * 8), axis=-1)


def quantize_q4(w: np.ndarray, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Symmetric 4-bit, group 32: scale = max|w| / 7, nibble = round(w / scale) + 7 (0..14)."""
    n, k = w.shape
    g = w.astype(np.float32).reshape(n, k // GROUP, GROUP)
    scale = np.abs(g).max(axis=-1) / 7.0
    scale = scale.astype(dtype).astype(np.float32)  # quantize against the scale the kernel will see
    safe = np.where(scale == 0, 1.0, scale)
    q = np.clip(np.rint(g / safe[..., None]) + 7, 0, 14).astype(np.uint8).reshape(n, k)
    return {"q_weight": _pack_nibbles(q), "q_scale": scale.astype(dtype)}


def quantize_q8(w: np.ndarray) -> dict[str, np.ndarray]:
    """Symmetric 8-bit, group 32, in the ``q8_0`` layout: scale = max|w| / 127, byte = round(w / scale) + 128."""
    n, k = w.shape
    g = w.astype(np.float32).reshape(n, k // GROUP, GROUP)
    scale = (np.abs(g).max(axis=-1) / 127.0).astype(np.float32)
    safe = np.where(scale == 0, 1.0, scale)
    q = (np.clip(np.rint(g / safe[..., None]), -127, 127) + 128).astype(np.uint8).reshape(n, k)
    return {"q_weight": _pack_bytes(q), "q_scale": scale}


def dequantize(fmt: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Inverse of the packing, in numpy: what the kernels compute for ``w`` (float32)."""
    if fmt == "f32":
        return arrays["weight"].astype(np.float32)
    qw = arrays["q_weight"]
    n = qw.shape[0]
    if fmt == "q8_0":
        q = ((qw[..., None] >> (np.arange(4, dtype=np.uint32) * 8)) & 255).reshape(n, -1).astype(np.float32) - 128
    else:
        q = ((qw[..., None] >> (np.arange(8, dtype=np.uint32) * 4)) & 15).reshape(n, -1).astype(np.float32)
        if fmt == "q4":
            q -= 7
    s = np.repeat(arrays["q_scale"].astype(np.float32), GROUP, axis=1)
    w = q * s
    if fmt == "q4_1":
        w += np.repeat(arrays["q_min"].astype(np.float32), GROUP, axis=1)
    return w
