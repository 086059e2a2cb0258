"""GGUF (ggml) blocks: their sizes, their exact float values, and their repacking into the kernels' layouts.

Two uses of the same bytes: :func:`decode` turns a tensor's blocks into float32 (the reader's ``to_numpy``,
the reference weights of tests), and :func:`ggml_blocks` repacks Q4_0/Q4_1/Q8_0 blocks into the ``q4_1`` /
``q8_0`` layouts of ``packing.py`` without rounding anything (the ``ggml`` mode keeps a file's 4-bit model
lossless). Written here because the block formats are llama.cpp's own (``ggml-common.h`` describes them);
PyPI ``gguf`` dequantizes them too, and the tests check this module against it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import BadModel
from ..arch import registry
from .modes import GROUP, Quantization
from .packing import _pack_bytes, _pack_nibbles

#: ggml type name -> (weights per block, bytes per block)
BLOCK_BYTES = {"F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q4_0": (32, 18), "Q4_1": (32, 20), "Q8_0": (32, 34)}


def decode(raw: np.ndarray, ggml_type: str, shape: tuple[int, ...]) -> np.ndarray:
    """Dequantize/convert a tensor's stored bytes to a float32 array of ``shape``."""
    raw = np.ascontiguousarray(raw).reshape(-1)
    n = int(np.prod(shape))
    if ggml_type == "F32":
        return raw.view("<f4").reshape(shape).astype(np.float32, copy=True)
    if ggml_type == "F16":
        return raw.view("<f2").reshape(shape).astype(np.float32)
    if ggml_type == "BF16":
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    if ggml_type not in BLOCK_BYTES:
        raise BadModel(f"tensor type {ggml_type} is not supported (supported: {', '.join(BLOCK_BYTES)})")
    blocks = raw.reshape(n // 32, BLOCK_BYTES[ggml_type][1])
    out = np.empty((n // 32, 32), np.float32)
    step = 1 << 14  # blocks per chunk: keeps temporaries small next to the float32 result
    for s in range(0, blocks.shape[0], step):
        out[s:s + step] = _decode_blocks(blocks[s:s + step], ggml_type)
    return out.reshape(shape)


def _decode_blocks(blocks: np.ndarray, ggml_type: str) -> np.ndarray:
    d = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (nb, 1)
    if ggml_type == "Q8_0":
        return d * blocks[:, 2:].copy().view(np.int8)
    qs = blocks[:, 4:] if ggml_type == "Q4_1" else blocks[:, 2:]
    # ggml nibble order: byte j holds weight j (low nibble) and weight j+16 (high nibble)
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1)
    if ggml_type == "Q4_1":
        return d * q + blocks[:, 2:4].copy().view("<f2").astype(np.float32)
    return d * (q.astype(np.float32) - 8.0)


_ROWS_PER_CHUNK = 2048  # repack this many rows at a time: peak memory stays near the output arrays


def ggml_blocks(t: Any) -> tuple[str, dict[str, np.ndarray]]:
    """Repack one GGUF tensor's raw blocks into this module's layout (exact: f16 → f32 is lossless)."""
    n, k = int(t.shape[0]), int(t.shape[1])
    kind = t.ggml_type
    raw = np.frombuffer(memoryview(t.raw), dtype=np.uint8)
    nb = k // GROUP
    size = BLOCK_BYTES[kind][1]
    if raw.size != n * nb * size:
        raise BadModel(f"tensor of shape {t.shape} has {raw.size} bytes of {kind} blocks, expected {n * nb * size}; "
                       "the GGUF file looks truncated or corrupt: download it again.")
    blocks = raw.reshape(n, nb, size)
    parts = [_repack_rows(kind, blocks[i:i + _ROWS_PER_CHUNK], k) for i in range(0, n, _ROWS_PER_CHUNK)]
    fmt = parts[0][0]
    return fmt, {key: np.concatenate([a[key] for _, a in parts], axis=0) for key in parts[0][1]}


def _repack_rows(kind: str, blocks: np.ndarray, k: int) -> tuple[str, dict[str, np.ndarray]]:
    n = blocks.shape[0]
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    if kind == "Q8_0":
        qs = blocks[..., 2:34].copy().view(np.int8).astype(np.int16) + 128
        return "q8_0", {"q_weight": _pack_bytes(qs.reshape(n, k).astype(np.uint8)), "q_scale": d}
    off = 4 if kind == "Q4_1" else 2
    qs = blocks[..., off:off + 16]
    nib = np.concatenate([qs & 15, qs >> 4], axis=-1)  # ggml: byte j holds weight j (low) and j+16 (high)
    if kind == "Q4_1":
        m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    else:
        m = -8.0 * d
    return "q4_1", {"q_weight": _pack_nibbles(nib.reshape(n, k)), "q_scale": d, "q_min": m}


def ggml_quantization(checkpoint: Any, cfg: Any = None) -> Quantization:
    """The lossless ``ggml`` mode for a GGUF checkpoint: each matrix keeps its file's block format.

    Q4_0 and Q4_1 are both stored as ``q4_1`` (Q4_0's ``(q - 8) d`` is ``q d + (-8 d)`` exactly),
    Q8_0 as ``q8_0``; matrices whose stacked parts differ, or that are float, stay ``f32``.
    """
    cfg = cfg or registry.config_from_dict(checkpoint.config)
    formats = []
    for path, names, is_matrix in registry.family_of(cfg).loader.param_sources(cfg):
        if not is_matrix:
            continue
        kinds = {checkpoint.get(n).ggml_type for n in names}
        if kinds <= {"Q4_0", "Q4_1"}:
            formats.append((path, "q4_1"))
        elif kinds == {"Q8_0"}:
            formats.append((path, "q8_0"))
    return Quantization("ggml", tuple(formats))
