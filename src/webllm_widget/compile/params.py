"""The model's parameters from a checkpoint: the family's name map, filled through the mode's packing.

Example::

    q = ggml_quantization(checkpoint)           # or "q4f32_1", "q0f32", ...
    for name, array in param_records(checkpoint, cfg, q):
        ...                                      # in the order the model library takes them
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from .arch import registry
from .quant.ggml import ggml_blocks
from .quant.modes import Quantization, as_quantization
from .quant.packing import quantize_q4


def param_records(checkpoint: Any, config: Any, quant: Quantization | str) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(param name, array)`` for every parameter of the quantized module, in module order.

    ``checkpoint`` follows ``webllm_widget.compile.checkpoint.open_checkpoint``: ``.get(hf_name)``
    returns a tensor with ``.shape``, ``.ggml_type``, ``.raw`` and ``.to_numpy()``. One module's
    tensors are in memory at a time.
    """
    quant = as_quantization(quant)
    dtype = quant.compute_dtype
    for path, names, is_matrix in registry.family_of(config).loader.param_sources(config):
        tensors = [checkpoint.get(n) for n in names]
        if not is_matrix:
            yield path, np.concatenate([t.to_numpy().reshape(-1) for t in tensors]).astype(dtype)
            continue
        in_features = int(tensors[0].shape[1])
        fmt = quant.format_of(path, in_features)
        if fmt in ("q4_1", "q8_0") or (fmt == "q4" and quant.name == "ggml"):
            parts = [ggml_blocks(t, fmt) for t in tensors]
            arrays = {key: np.concatenate([a[key] for _, a in parts], axis=0) for key in parts[0][1]}
        else:
            w = np.concatenate([t.to_numpy() for t in tensors], axis=0).astype(np.float32)
            arrays = quantize_q4(w, dtype) if fmt == "q4" else {"weight": w.astype(dtype)}
        for key, arr in arrays.items():
            yield f"{path}.{key}", np.ascontiguousarray(arr)
