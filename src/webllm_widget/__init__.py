"""webllm-widget: run a large language model in the notebook's browser page on the user's GPU."""
from __future__ import annotations

from ._version import __version__
from .errors import (
    Aborted, BadArtifact, BadModel, BadRequest, CompileError, CompilerNotInstalled, ContextWindowExceeded, DeviceLost,
    HostHoldsMessages, KernelError, OutOfGPUMemory, ShaderF16Unavailable, StorageQuotaExceeded, ToolchainMissing,
    UnsupportedParameter, ViewUnreachable, WebGPUUnavailable, WebLLMWidgetError,
)

__all__ = [
    "__version__", "Aborted", "BadArtifact", "BadModel", "BadRequest", "CompileError", "CompilerNotInstalled",
    "ContextWindowExceeded", "HostHoldsMessages",
    "DeviceLost", "KernelError", "OutOfGPUMemory", "ShaderF16Unavailable", "StorageQuotaExceeded", "ToolchainMissing",
    "UnsupportedParameter", "ViewUnreachable", "WebGPUUnavailable", "WebLLMWidgetError",
]


def __getattr__(name: str):
    # Widgets import anywidget and the JS bundle; load them only when asked for.
    if name == "WebGPU":
        from .widgets.webgpu import WebGPU

        return WebGPU
    if name == "Chat":
        from .widgets.chat import Chat

        return Chat
    raise AttributeError(name)
