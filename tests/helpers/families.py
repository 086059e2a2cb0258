"""Tiny checkpoints of each model family, written by independent writers, and the weights the reference runs.

Each :class:`Case` writes its source once under the cache's ``test-sources`` (same bytes every run, so the
model folders built from it are found by content hash) and says which quantization the build uses and which
float32 weights the numpy reference must run to judge the build exactly:

    case = CASES["qwen3-hf"]
    source, weights, config = case.write()
    folder = build_model_folder(source, quantization=case.quantization, device="webgpu", schedule="fallback")
    want = reference_logits(weights, config)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tiny import TinyLlama


def _q4_weights(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What ``q4f32_1`` computes with: every matrix through the 4-bit group quantizer and back."""
    from webllm_widget.compile.quant.packing import dequantize, quantize_q4

    return {k: (dequantize("q4", quantize_q4(v)) if v.ndim == 2 else v) for k, v in weights.items()}


def _sources() -> Path:
    from webllm_widget.cache import cache_dir

    return cache_dir() / "test-sources"


def _qwen3_hf() -> tuple[Path, dict, dict]:
    tiny = TinyLlama.make(seed=5, arch="qwen3", tie=False, head_dim=32)
    return tiny.write_hf(_sources() / "tiny-qwen3-seed5"), _q4_weights(tiny.weights), tiny.config


@dataclass(frozen=True)
class Case:
    id: str
    quantization: str
    make: Callable[[], tuple[Path, dict, dict]]

    def write(self) -> tuple[Path, dict, dict]:
        """(source path, float32 weights the build holds exactly, config for the reference)."""
        return self.make()


CASES = {c.id: c for c in [
    Case("qwen3-hf", "q4f32_1", _qwen3_hf),  # untied head, head_dim 32 != hidden / heads, per-head q/k norm
]}
