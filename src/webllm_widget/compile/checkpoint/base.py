"""The checkpoint view every reader gives: an HF-style ``config`` dict and HF-named tensors, read lazily."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..quant.ggml import BLOCK_BYTES, decode

_WHAT_TO_DO_GGUF = (
    "Download the file again (it may be truncated or damaged), or pass a different GGUF/Hugging Face checkpoint."
)


@dataclass
class Tensor:
    """One checkpoint tensor. ``raw`` is the stored bytes (q/k rows already in HF order); ``shift`` is added to the
    stored values to give the HF convention's (``-1`` for a Gemma norm stored by llama.cpp as ``1 + w``)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: str
    _raw: Callable[[], np.ndarray] = field(repr=False)
    shift: float = 0.0

    @property
    def raw(self) -> np.ndarray:
        """The data exactly as stored, as a flat ``uint8`` array (quantized blocks stay blocks)."""
        return self._raw()

    @property
    def nbytes(self) -> int:
        per, size = BLOCK_BYTES[self.ggml_type]
        return int(np.prod(self.shape)) // per * size

    def to_numpy(self) -> np.ndarray:
        """Dequantize/convert to a float32 array of ``shape`` (with ``shift`` added)."""
        values = decode(self.raw, self.ggml_type, self.shape)
        return values + np.float32(self.shift) if self.shift else values


class Checkpoint:
    """A model checkpoint: ``config`` (HF-style dict) and HF-named tensors, read lazily."""

    kind: str
    path: Path
    config: dict[str, Any]

    def tensor_names(self) -> list[str]:
        raise NotImplementedError

    def get(self, hf_name: str) -> Tensor:
        raise NotImplementedError

    def iter_tensors(self) -> Iterator[tuple[str, Tensor]]:
        """Yield ``(hf_name, Tensor)`` in file order; data is read only when a tensor is touched."""
        for name in self.tensor_names():
            yield name, self.get(name)

    def __repr__(self) -> str:
        c = self.config
        return (f"<{type(self).__name__} {self.path.name}: {c['architecture']} {c['num_hidden_layers']} layers, "
                f"hidden {c['hidden_size']}, vocab {c['vocab_size']}>")
