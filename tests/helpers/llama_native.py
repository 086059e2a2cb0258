"""Run a compiled model library natively (llvm, relax VM in Python) the way web-llm drives it in the page.

Shared by the native, quantization, CPU-kernel and WebGPU model tests: chunked prefill of a prompt, then
one-token decode steps, each returning the logits of the last position; ``PROMPT``/``FORCED`` are the
teacher-forced token ids those tests use and ``reference_logits`` the numpy reference's logits for them.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import tvm
from tvm import relax
from tvm.runtime import ShapeTuple

from reference import reference_for
from tiny import TinyLlama
from webllm_widget.compile.arch import registry
from webllm_widget.compile.model_lib import compile_model, export_model
from webllm_widget.compile.params import param_records
from webllm_widget.compile.quant.modes import as_quantization


class NativeModel:
    def __init__(self, executable, records: Iterable[tuple[str, np.ndarray]], metadata: dict, hidden: int):
        self.dev = tvm.cpu()
        self.vm = relax.VirtualMachine(executable, self.dev)
        by_name = dict(records)
        names = [p["name"] for p in metadata["params"]]
        assert sorted(by_name) == sorted(names), set(by_name) ^ set(names)
        for p in metadata["params"]:  # the records must match what _metadata declares
            a = by_name[p["name"]]
            assert list(a.shape) == p["shape"] and str(a.dtype) == p["dtype"], (p, a.shape, a.dtype)
        self.params = [tvm.runtime.tensor(by_name[n], self.dev) for n in names]
        self.meta = metadata
        self.hidden = hidden
        self.chunk = metadata["prefill_chunk_size"]
        f = tvm.get_global_func
        self._add, self._begin, self._end = (f("vm.builtin.kv_state_add_sequence"),
                                             f("vm.builtin.kv_state_begin_forward"),
                                             f("vm.builtin.kv_state_end_forward"))
        self.kv = self.vm["create_tir_paged_kv_cache"](
            ShapeTuple([1]), ShapeTuple([metadata["context_window_size"]]), ShapeTuple([self.chunk]),
            ShapeTuple([16]), ShapeTuple([0]))
        self._add(self.kv, 0)

    def _step(self, fn: str, ids: list[int]) -> np.ndarray:
        emb = self.vm["embed"](tvm.runtime.tensor(np.array(ids, dtype="int32"), self.dev), self.params)
        emb = emb.numpy().reshape(1, len(ids), self.hidden)
        self._begin(self.kv, ShapeTuple([0]), ShapeTuple([len(ids)]))
        out = self.vm[fn](tvm.runtime.tensor(emb, self.dev), self.kv, self.params)
        self._end(self.kv)
        return out[0].numpy().reshape(-1)

    def prefill(self, ids: list[int]) -> np.ndarray:
        """Logits after the last prompt token, prefilling in chunks of prefill_chunk_size like web-llm."""
        logits = None
        for i in range(0, len(ids), self.chunk):
            part = ids[i:i + self.chunk]
            logits = self._step("prefill" if len(part) > 1 else "decode", part)
        return logits

    def decode(self, token: int) -> np.ndarray:
        return self._step("decode", [token])

    def teacher_forced(self, prompt: list[int], forced: list[int]) -> np.ndarray:
        """Logits after the prompt and after each forced token: shape (1 + len(forced), vocab)."""
        rows = [self.prefill(prompt)]
        rows += [self.decode(t) for t in forced]
        return np.stack(rows)


PROMPT = list(range(3, 23))
FORCED = [5, 77, 100]


class ArrayCheckpoint:
    """A float32 checkpoint held in memory, with the interface of ``weights.open_checkpoint``."""

    def __init__(self, weights: dict[str, np.ndarray]):
        self.weights = weights

    def get(self, name: str):
        w = self.weights[name]

        class _T:
            shape, ggml_type = w.shape, "F32"

            @staticmethod
            def to_numpy():
                return w

        return _T()


#: Native libraries compiled in this process, by config and quantization (see :func:`compiled_native`).
_NATIVE: dict[tuple[str, str, str], tuple] = {}


def compiled_native(cfg, quant):
    """``(exported, executable)`` of ``cfg`` in ``quant`` for llvm, compiled once per process: the library depends
    on the config (its dataclass repr holds every field) and the quantization, not on the weights, which are
    passed at run time. Tests of different seeds with the same shapes share it."""
    key = (type(cfg).__name__, repr(cfg), as_quantization(quant).key())
    if key not in _NATIVE:
        ex = export_model(cfg, quant, "llvm")
        _NATIVE[key] = (ex, compile_model(ex, "llvm"))
    return _NATIVE[key]


def run_native(tiny: TinyLlama, mode="q0f32", chunk=8, checkpoint=None, quant=None, config=None):
    cfg = registry.config_from_dict(config or tiny.config, prefill_chunk_size=chunk)
    quant = quant or mode
    ex, exe = compiled_native(cfg, quant)
    model = NativeModel(exe, param_records(checkpoint or ArrayCheckpoint(tiny.weights), cfg, quant),
                        ex.metadata, cfg.hidden_size)
    return model.teacher_forced(PROMPT, FORCED), ex


def reference_logits(weights, config, prompt=None, forced=None) -> np.ndarray:
    prompt, forced = prompt or PROMPT, forced or FORCED
    return reference_for(weights, config).forward(prompt + forced)[len(prompt) - 1:]
