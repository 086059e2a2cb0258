"""numpy of the model library's sampling order, shared by the native and WebGPU sampling tests."""
from __future__ import annotations

import numpy as np

from webllm_widget.compile.model_lib import TOP_SORTED


def top_first(p):
    """numpy of argsort_probs' order: the TOP_SORTED most likely ids descending (ties: lower id), then the rest by id."""
    order = np.argsort(-p, kind="stable")
    head = order[:TOP_SORTED]
    rest = np.setdiff1d(np.arange(len(p)), head)
    return np.concatenate([head, rest])
