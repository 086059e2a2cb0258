"""Read model checkpoints (GGUF files and Hugging Face folders) as HF-named tensors, one at a time.

Both readers give the same view: ``.config`` is an HF-style dict, and ``.iter_tensors()`` yields
``(hf_name, Tensor)`` lazily, so a caller converting a model holds about one tensor in memory.
GGUF data stays memory-mapped until a tensor is touched.

Example::

    ckpt = open_checkpoint("SmolLM2-135M-Instruct.Q4_1.gguf")
    for name, t in ckpt.iter_tensors():
        print(name, t.shape, t.ggml_type)      # model.layers.0.self_attn.q_proj.weight (576, 576) Q4_1
        w = t.to_numpy()                        # float32, HF layout [out, in]
"""
from __future__ import annotations

import os
from pathlib import Path

from ...errors import BadModel
from ..arch.registry import SUPPORTED_ARCHITECTURES
from ..quant.ggml import BLOCK_BYTES
from .base import _WHAT_TO_DO_GGUF, Checkpoint, Tensor
from .gguf import GGUFCheckpoint
from .hf import HFCheckpoint

__all__ = ["Tensor", "Checkpoint", "GGUFCheckpoint", "HFCheckpoint", "open_checkpoint", "SUPPORTED_ARCHITECTURES",
           "BLOCK_BYTES"]


def open_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Open a GGUF file or a Hugging Face folder (``config.json`` + ``*.safetensors``).

    Raises :class:`~webllm_widget.errors.BadModel` with a message naming the file and what to do when the
    file is truncated or corrupt, or the architecture is not a Llama-family one.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise BadModel(f"{p}: no such file or folder. Pass a .gguf file or a Hugging Face model folder.")
    if p.is_dir():
        return HFCheckpoint(p)
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return GGUFCheckpoint(p)
    if p.suffix == ".json" and p.name == "config.json":
        return HFCheckpoint(p.parent)
    raise BadModel(f"{p}: not a GGUF file (it does not start with the GGUF magic bytes). "
                   f"{_WHAT_TO_DO_GGUF}")
