"""Inside the LLM: the model library a Chat runs, opened up for teaching ML compilation.

- :meth:`webllm_widget.WebGPU.profile` runs a model's prefill and decode steps on the page's GPU and returns a
  :class:`ModelProfile`: one row per dispatch (kernel, workgroups, bytes bound, GPU time), the kernels' WGSL and
  the scheduled TIR they came from (:func:`kernel_sources`), the adapter's measured bandwidth and FMA rate, and a
  roofline.
- :class:`ScheduleExperiment` rebuilds one of the model's matrix-vector products with other schedules, checks each
  against numpy on the page's GPU and times it.
"""
from __future__ import annotations

from .experiment import ScheduleExperiment
from .profile import ModelProfile
from .sources import KernelSource, kernel_sources

__all__ = ["KernelSource", "ModelProfile", "ScheduleExperiment", "kernel_sources"]
