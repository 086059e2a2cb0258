"""GGUF (ggml) blocks: their sizes, their exact float values, and their repacking into the kernels' layouts.

Two uses of the same bytes: :func:`decode` turns a tensor's blocks into float32 (the reader's ``to_numpy``,
the reference weights of tests), and :func:`ggml_blocks` repacks blocks into the ``q4_1`` / ``q8_0`` layouts of
``packing.py``. Written here because the block formats are llama.cpp's own (``ggml-common.h`` describes them);
PyPI ``gguf`` dequantizes them too (in numpy, without a repacking), and the tests check this module against it
bit for bit.

Block types read (weights per block, bytes per block; ``w`` = the weight):

- ``Q4_0`` (32, 18): f16 ``d``, 16 bytes of nibbles; ``w = d (q - 8)``. ``Q4_1`` (32, 20): ``d``, ``m``;
  ``w = d q + m``. Byte ``j`` holds weight ``j`` (low nibble) and ``j + 16`` (high nibble).
- ``Q5_0`` (32, 22) / ``Q5_1`` (32, 24): as Q4_0/Q4_1 with a fifth bit per weight in a 32-bit ``qh``
  (bit ``j`` for weight ``j``); ``w = d (q - 16)`` / ``w = d q + m``.
- ``Q8_0`` (32, 34): f16 ``d``, 32 int8; ``w = d q``.
- ``Q4_K`` (256, 144): f16 ``d``, ``dmin``, 12 bytes of eight 6-bit scales and mins, 128 bytes of nibbles;
  sub-block ``i`` of 32 weights has ``w = d sc_i q - dmin m_i``. Each 32 bytes of nibbles hold two
  sub-blocks: low nibbles the first, high nibbles the second.
- ``Q5_K`` (256, 176): as Q4_K with 32 bytes of fifth bits (bit ``2c`` / ``2c + 1`` of byte ``l`` for weight
  ``l`` of the two sub-blocks of chunk ``c``).
- ``Q6_K`` (256, 210): 128 bytes of low nibbles, 64 of high bit pairs, 16 int8 scales, f16 ``d`` last;
  sub-block ``i`` of 16 weights has ``w = d sc_i (q - 32)``.

Repacking, exact where the layout allows it: Q4_0, Q4_1 and Q4_K are all ``q * s + m`` per group of 32 with
``s`` and ``m`` exact in float32 (a float16 times a 6-bit integer fits float32's 24-bit significand), so they
become ``q4_1`` bit for bit; Q8_0 becomes ``q8_0`` bit for bit. Q4_0 also fits the symmetric ``q4`` layout
(``(nib - 7) s``, no offset: 20 bytes per 32 weights instead of 24) with its nibbles complemented and its scale
negated: ``d (q - 8) = (-d) ((15 - q) - 7)``; the page's CPU path stores it so (:func:`ggml_quantization`). Q5_0, Q5_1, Q5_K and Q6_K have more than 4 bits
per weight and no 8-bit layout that keeps them exactly (Q6_K has a scale per 16 weights, the kernels one per
32), so they are re-quantized from their exact values to ``q8_0`` (symmetric, a float32 scale per 32:
error at most ``max|w| / 254`` per group).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import BadModel
from ..arch import registry
from .modes import GROUP, Quantization
from .packing import _pack_bytes, _pack_nibbles

#: ggml type name -> (weights per block, bytes per block)
BLOCK_BYTES = {"F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22),
               "Q5_1": (32, 24), "Q8_0": (32, 34), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210)}
#: block types whose weights are ``q * s + m`` per 32 with s, m exact in float32: repacked to ``q4_1`` exactly
EXACT_Q4 = ("Q4_0", "Q4_1", "Q4_K")
#: block types re-quantized to ``q8_0`` in the ``ggml`` mode (more than 4 bits a weight)
REQUANTIZED_Q8 = ("Q5_0", "Q5_1", "Q5_K", "Q6_K")


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
    per, size = BLOCK_BYTES[ggml_type]
    if n % per or raw.size != n // per * size:
        raise BadModel(f"tensor of shape {shape} has {raw.size} bytes of {ggml_type} blocks, expected "
                       f"{n // per * size}; the GGUF file looks truncated or corrupt: download it again.")
    blocks = raw.reshape(n // per, size)
    out = np.empty((n // per, per), np.float32)
    step = (1 << 19) // per  # blocks per chunk: keeps temporaries small next to the float32 result
    for s in range(0, blocks.shape[0], step):
        out[s:s + step] = _decode_blocks(blocks[s:s + step], ggml_type)
    return out.reshape(shape)


def _f16(b: np.ndarray) -> np.ndarray:
    """Little-endian float16 from the last axis' 2 bytes, as float32 with a trailing axis of 1."""
    return np.ascontiguousarray(b).view("<f2").astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """16 bytes -> 32 values: byte j holds value j (low nibble) and value j + 16 (high nibble)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _k_scales_mins(sc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K's 12 bytes -> eight 6-bit scales and eight 6-bit mins (nb, 8) each.

    Sub-blocks 0-3: scale = low 6 bits of byte j, min = low 6 bits of byte j + 4. Sub-blocks 4-7: the low 4
    bits come from byte j + 4 (scale: low nibble, min: high nibble) and the top 2 from the spare top bits of
    bytes j - 4 (scale) and j (min).
    """
    sc = sc.astype(np.uint8)
    scales = np.concatenate([sc[:, 0:4] & 63, (sc[:, 8:12] & 15) | ((sc[:, 0:4] >> 6) << 4)], axis=1)
    mins = np.concatenate([sc[:, 4:8] & 63, (sc[:, 8:12] >> 4) | ((sc[:, 4:8] >> 6) << 4)], axis=1)
    return scales.astype(np.float32), mins.astype(np.float32)


def _k4_parts(blocks: np.ndarray, ggml_type: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_K/Q5_K blocks -> (codes (nb, 8, 32), scale (nb, 8), offset (nb, 8)): ``w = code * scale + offset``,
    scale and offset exact in float32."""
    d, dmin = _f16(blocks[:, 0:2]), _f16(blocks[:, 2:4])
    scales, mins = _k_scales_mins(blocks[:, 4:16])
    if ggml_type == "Q4_K":
        qs = blocks[:, 16:144].reshape(-1, 4, 32)
        codes = np.stack([qs & 15, qs >> 4], axis=2).reshape(-1, 8, 32)
    else:
        qh = blocks[:, 16:48]  # (nb, 32): byte l holds the fifth bit of weight l of every sub-block
        qs = blocks[:, 48:176].reshape(-1, 4, 32)
        low = np.stack([qs & 15, qs >> 4], axis=2).reshape(-1, 8, 32)
        high = (qh[:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1
        codes = low | (high << 4)
    return codes, d * scales, -(dmin * mins)


def _decode_blocks(blocks: np.ndarray, ggml_type: str) -> np.ndarray:
    if ggml_type in ("Q4_K", "Q5_K"):
        codes, scale, offset = _k4_parts(blocks, ggml_type)
        return (codes * scale[..., None] + offset[..., None]).reshape(-1, 256)
    if ggml_type == "Q6_K":
        ql, qh = blocks[:, 0:128].reshape(-1, 2, 64), blocks[:, 128:192].reshape(-1, 2, 32)
        sc = np.ascontiguousarray(blocks[:, 192:208]).view(np.int8).astype(np.float32).reshape(-1, 16)
        d = _f16(blocks[:, 208:210])
        # per half of 128: four runs of 32 from (ql[0:32] low, ql[32:64] low, ql[0:32] high, ql[32:64] high),
        # each with 2 high bits from qh at shifts 0, 2, 4, 6
        low = np.stack([ql[..., 0:32] & 15, ql[..., 32:64] & 15, ql[..., 0:32] >> 4, ql[..., 32:64] >> 4], axis=2)
        high = (qh[:, :, None, :] >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3
        q = (low | (high << 4)).astype(np.float32).reshape(-1, 16, 16) - 32.0  # 16 sub-blocks of 16
        return (d[:, :, None] * sc[:, :, None] * q).reshape(-1, 256)
    d = _f16(blocks[:, :2])  # (nb, 1)
    if ggml_type == "Q8_0":
        return d * blocks[:, 2:].copy().view(np.int8)
    if ggml_type in ("Q5_0", "Q5_1"):
        off = 4 if ggml_type == "Q5_1" else 2
        qh = np.ascontiguousarray(blocks[:, off:off + 4]).view("<u4")  # (nb, 1): bit j = fifth bit of weight j
        fifth = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)
        q = (_nibbles(blocks[:, off + 4:off + 20]) | (fifth << 4)).astype(np.float32)
        if ggml_type == "Q5_1":
            return d * q + _f16(blocks[:, 2:4])
        return d * (q - 16.0)
    qs = blocks[:, 4:] if ggml_type == "Q4_1" else blocks[:, 2:]
    q = _nibbles(qs)
    if ggml_type == "Q4_1":
        return d * q + _f16(blocks[:, 2:4])
    return d * (q.astype(np.float32) - 8.0)


_ROWS_PER_CHUNK = 2048  # repack this many rows at a time: peak memory stays near the output arrays


def natural_format(ggml_type: str) -> str | None:
    """The packed format a block type goes to in the ``ggml`` mode (None: a float type, kept as ``f32``)."""
    if ggml_type in EXACT_Q4:
        return "q4_1"
    if ggml_type == "Q8_0" or ggml_type in REQUANTIZED_Q8:
        return "q8_0"
    return None


def ggml_blocks(t: Any, fmt: str | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """One GGUF tensor's blocks in ``fmt`` (default :func:`natural_format`): Q4_0/Q4_1/Q4_K as ``q4_1``, Q4_0 as
    ``q4`` and Q8_0 as ``q8_0`` exactly (float16 -> float32 is lossless); anything else asked as ``q8_0`` is
    re-quantized from its exact values."""
    n, k = int(t.shape[0]), int(t.shape[1])
    kind = t.ggml_type
    if getattr(t, "shift", 0.0):
        raise BadModel(f"{t.name}: a matrix whose stored values are offset from the model's cannot keep its blocks; "
                       "this is a bug in the family's GGUF name map.")
    fmt = fmt or natural_format(kind)
    exact = ((fmt == "q4_1" and kind in EXACT_Q4) or (fmt == "q8_0" and kind == "Q8_0")
             or (fmt == "q4" and kind == "Q4_0"))
    if not exact:
        if fmt != "q8_0":
            raise BadModel(f"a {kind} tensor cannot be stored as {fmt}; plan the ggml mode with ggml_quantization().")
        from .packing import quantize_q8

        return "q8_0", quantize_q8(t.to_numpy().reshape(n, k))
    raw = np.frombuffer(memoryview(t.raw), dtype=np.uint8)
    per, size = BLOCK_BYTES[kind]
    nb = k // per
    if k % per or raw.size != n * nb * size:
        raise BadModel(f"tensor of shape {t.shape} has {raw.size} bytes of {kind} blocks, expected {n * nb * size}; "
                       "the GGUF file looks truncated or corrupt: download it again.")
    blocks = raw.reshape(n, nb, size)
    parts = [_repack_rows(kind, blocks[i:i + _ROWS_PER_CHUNK], k, fmt) for i in range(0, n, _ROWS_PER_CHUNK)]
    return fmt, {key: np.concatenate([a[key] for _, a in parts], axis=0) for key in parts[0][1]}


def _repack_rows(kind: str, blocks: np.ndarray, k: int, fmt: str) -> tuple[str, dict[str, np.ndarray]]:
    n = blocks.shape[0]
    if kind == "Q4_K":
        codes, scale, offset = _k4_parts(blocks.reshape(-1, blocks.shape[-1]), kind)
        return "q4_1", {"q_weight": _pack_nibbles(codes.reshape(n, k)), "q_scale": scale.reshape(n, k // GROUP),
                        "q_min": offset.reshape(n, k // GROUP)}
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    if kind == "Q8_0":
        qs = blocks[..., 2:34].copy().view(np.int8).astype(np.int16) + 128
        return "q8_0", {"q_weight": _pack_bytes(qs.reshape(n, k).astype(np.uint8)), "q_scale": d}
    off = 4 if kind == "Q4_1" else 2
    qs = blocks[..., off:off + 16]
    nib = np.concatenate([qs & 15, qs >> 4], axis=-1)  # ggml: byte j holds weight j (low) and j+16 (high)
    if fmt == "q4":  # Q4_0 symmetric: d (q - 8) = (-d) ((15 - q) - 7)
        return "q4", {"q_weight": _pack_nibbles((15 - nib).reshape(n, k)), "q_scale": -d}
    if kind == "Q4_1":
        m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    else:
        m = -8.0 * d
    return "q4_1", {"q_weight": _pack_nibbles(nib.reshape(n, k)), "q_scale": d, "q_min": m}


def ggml_quantization(checkpoint: Any, cfg: Any = None, *, device: str = "webgpu") -> Quantization:
    """The ``ggml`` mode for a GGUF checkpoint: each matrix keeps its file's blocks where a layout holds them.

    Q4_0, Q4_1 and Q4_K are stored as ``q4_1`` exactly (Q4_0's ``(q - 8) d`` is ``q d + (-8 d)``; Q4_K's
    ``d sc q - dmin m`` is ``q s + m`` per 32), Q8_0 as ``q8_0`` exactly. A matrix with parts of more than 4 bits
    (Q5_0, Q5_1, Q5_K, Q6_K), alone or stacked with others (Q4_K_M files keep some ``attn_v`` in Q6_K next to
    Q4_K ``attn_q``/``attn_k``), is re-quantized to ``q8_0``; a matrix with a float part stays ``f32``.

    ``device="cpu"`` (the page's CPU path, whose decode is bound by the bytes it reads): a matrix all of Q4_0
    blocks is stored as the symmetric ``q4`` instead, exactly (module docstring), 20 bytes per 32 weights instead
    of ``q4_1``'s 24. The WebGPU kernels keep reading ``q4_1``.
    """
    cfg = cfg or registry.config_from_dict(checkpoint.config)
    formats = []
    for path, names, is_matrix in registry.family_of(cfg).loader.param_sources(cfg):
        if not is_matrix:
            continue
        kinds = {checkpoint.get(n).ggml_type for n in names}
        if device == "cpu" and kinds == {"Q4_0"}:
            formats.append((path, "q4"))
        elif kinds <= set(EXACT_Q4):
            formats.append((path, "q4_1"))
        elif all(natural_format(k) for k in kinds):
            formats.append((path, "q8_0"))
    return Quantization("ggml", tuple(formats))
