"""Quantization modes: the names a build accepts and, for each, the storage format of every matrix.

The nn swap is in ``nn.py``, the packed layouts in ``packing.py``, GGUF blocks in ``ggml.py``.

Modes (the ``quantization`` name written into ``_metadata`` and ``mlc-chat-config.json``):

``q0f32``
    No quantization, float32 weights and compute: the accuracy baseline.
``q4f32_1``
    4-bit symmetric weights, one float32 scale per group of 32 along the input dimension,
    float32 compute. Runs on every WebGPU adapter (no ``shader-f16`` needed).
``q4f16_1``
    The same with float16 scales, activations and KV cache; needs ``shader-f16``.
``ggml``
    For GGUF input: keeps the file's Q4_0/Q4_1/Q4_K blocks exactly as ``q4_1`` (scale and min per 32
    weights, stored here as float32, which holds the file's values exactly) and Q8_0 blocks (scale + 32
    int8), dequantized on the fly by the kernels; float32 compute. Q5_0/Q5_1/Q5_K/Q6_K matrices (more than
    4 bits a weight) are re-quantized to ``q8_0`` from their exact values. Each matrix keeps its own format
    (see :func:`.ggml.ggml_quantization`).

Example::

    q = as_quantization("q4f32_1")
    q.format_of("model.layers.0.mlp.down_proj", 576)   # "q4"
"""
from __future__ import annotations

import dataclasses

from ...errors import BadModel

MODES = ("q0f32", "q4f32_1", "q4f16_1", "ggml")
GROUP = 32


@dataclasses.dataclass(frozen=True)
class Quantization:
    """A quantization mode; for ``ggml`` also the storage format of each matrix (module path → format)."""

    name: str
    formats: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.name not in MODES:
            raise BadModel(f"unknown quantization {self.name!r}; choose one of {', '.join(MODES)}.")

    @property
    def compute_dtype(self) -> str:
        return "float16" if self.name == "q4f16_1" else "float32"

    def format_of(self, path: str, in_features: int) -> str:
        """Storage format of the matrix at module ``path`` (e.g. ``model.layers.0.mlp.down_proj``)."""
        if self.name == "q0f32":
            return "f32"
        if self.name == "ggml":
            return dict(self.formats).get(path, "f32")
        return "q4" if in_features % GROUP == 0 else "f32"

    def key(self) -> str:
        """A stable text for content hashes."""
        return self.name + "".join(f";{p}={f}" for p, f in sorted(self.formats))

    @classmethod
    def from_key(cls, text: str) -> "Quantization":
        """The mode a :meth:`key` text names (a built folder's manifest records it)."""
        name, *pairs = text.split(";")
        return cls(name, tuple(tuple(p.split("=", 1)) for p in pairs))  # type: ignore[misc]


def as_quantization(q: "Quantization | str") -> Quantization:
    return q if isinstance(q, Quantization) else Quantization(str(q))
