"""A small numpy quantizer for llama.cpp's K-quant blocks (Q4_K, Q5_K, Q6_K), used only to write test GGUF files.

PyPI ``gguf`` 0.19 dequantizes K-quants but its ``quantize`` raises NotImplementedError for them, so the tiny
Q4_K_M-style files are written with this quantizer; what the file holds is then read back with ``gguf``'s own
dequantizer (the tests' truth), never with this module or the project's decoder. The quantization here is
the plain one (min/max per sub-block, scales rounded to 6 or 8 bits), not llama.cpp's error-minimizing search.

    blocks = quantize_k(w, "Q4_K")      # uint8 (rows, bytes per row); w: float32 (rows, k), k % 256 == 0
"""
from __future__ import annotations

import numpy as np


def _f16_bytes(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.astype("<f2")).view(np.uint8).reshape(*x.shape, 2)


def _q4_k(x: np.ndarray, levels: int = 15) -> np.ndarray:
    """x: (nb, 256) -> (nb, 144) Q4_K blocks: 8 sub-blocks of 32, ``w = d sc q - dmin m``. With ``levels=31``:
    the 5-bit codes and scales of Q5_K, as (header 16 bytes, codes (nb, 8, 32))."""
    sub = x.reshape(-1, 8, 32)
    lo = np.minimum(sub.min(axis=-1), 0.0)
    scale = (sub.max(axis=-1) - lo) / float(levels)
    d = (scale.max(axis=-1) / 63.0).astype(np.float16)
    dmin = (-lo.min(axis=-1) / 63.0).astype(np.float16)
    safe_d = np.where(d == 0, 1, d).astype(np.float32)[:, None]
    safe_m = np.where(dmin == 0, 1, dmin).astype(np.float32)[:, None]
    sc = np.clip(np.rint(scale / safe_d), 0, 63).astype(np.uint8)
    m = np.clip(np.rint(-lo / safe_m), 0, 63).astype(np.uint8)
    s = d.astype(np.float32)[:, None] * sc
    off = dmin.astype(np.float32)[:, None] * m
    q = np.clip(np.rint((sub + off[..., None]) / np.where(s == 0, 1, s)[..., None]), 0, levels).astype(np.uint8)
    scales = np.concatenate([(sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6),
                             (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6),
                             (sc[:, 4:8] & 15) | ((m[:, 4:8] & 15) << 4)], axis=1)
    if levels != 15:
        return np.concatenate([_f16_bytes(d), _f16_bytes(dmin), scales], axis=1), q
    q = q.reshape(-1, 4, 2, 32)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)
    return np.concatenate([_f16_bytes(d), _f16_bytes(dmin), scales, qs], axis=1)


def _q5_k(x: np.ndarray) -> np.ndarray:
    """x: (nb, 256) -> (nb, 176) Q5_K blocks: Q4_K's header, 32 bytes of fifth bits (bit ``j`` of byte ``l``: weight
    ``l`` of sub-block ``j``), then Q4_K's nibble layout of the low 4 bits."""
    head, q = _q4_k(x, levels=31)
    qh = np.bitwise_or.reduce(((q >> 4) & 1).astype(np.uint8) << np.arange(8, dtype=np.uint8)[None, :, None], axis=1)
    low = (q & 15).reshape(-1, 4, 2, 32)
    qs = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(-1, 128)
    return np.concatenate([head, qh, qs], axis=1)


def _q6_k(x: np.ndarray) -> np.ndarray:
    """x: (nb, 256) -> (nb, 210) Q6_K blocks: 16 sub-blocks of 16, ``w = d sc (q - 32)``."""
    sub = x.reshape(-1, 16, 16)
    scale = np.abs(sub).max(axis=-1) / 31.0
    d = (scale.max(axis=-1) / 127.0).astype(np.float16)
    sc = np.clip(np.rint(scale / np.where(d == 0, 1, d).astype(np.float32)[:, None]), 0, 127).astype(np.int8)
    s = d.astype(np.float32)[:, None] * sc
    q = (np.clip(np.rint(sub / np.where(s == 0, 1, s)[..., None]), -32, 31) + 32).astype(np.uint8).reshape(-1, 2, 4, 32)
    ql = np.concatenate([(q[:, :, 0] & 15) | ((q[:, :, 2] & 15) << 4),
                         (q[:, :, 1] & 15) | ((q[:, :, 3] & 15) << 4)], axis=2).reshape(-1, 128)
    qh = ((q[:, :, 0] >> 4) | ((q[:, :, 1] >> 4) << 2) | ((q[:, :, 2] >> 4) << 4) | ((q[:, :, 3] >> 4) << 6))
    return np.concatenate([ql, qh.reshape(-1, 64), sc.view(np.uint8), _f16_bytes(d)], axis=1)


def quantize_k(w: np.ndarray, kind: str) -> np.ndarray:
    """``w`` (rows, k) float32 -> uint8 blocks (rows, k / 256 * block bytes) of ``kind`` (``Q4_K``, ``Q5_K``, ``Q6_K``)."""
    rows, k = w.shape
    if k % 256:
        raise ValueError(f"K-quants need rows of a multiple of 256 values, got {k}")
    x = np.ascontiguousarray(w, dtype=np.float32).reshape(-1, 256)
    blocks = {"Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k}[kind](x)
    return np.ascontiguousarray(blocks.astype(np.uint8)).reshape(rows, -1)
