"""Named errors: each carries a code a program can test and a sentence a person can act on."""
from __future__ import annotations


class WebLLMWidgetError(Exception):
    """Base class. ``code`` is stable and matches the page's error codes (see protocol.py)."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None, detail: dict | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.detail = detail or {}

    def __str__(self) -> str:  # "[code] message" so logs and tracebacks show the code
        return f"[{self.code}] {self.args[0]}"


class ToolchainMissing(WebLLMWidgetError):
    code = "toolchain-missing"


class CompilerNotInstalled(ToolchainMissing):
    """Compiling needs apache-tvm, which comes with the ``compile`` extra: ``pip install 'webllm-widget[compile]'``."""


class CompileError(WebLLMWidgetError):
    code = "compile-error"


class WebGPUUnavailable(WebLLMWidgetError):
    code = "no-webgpu"


class ShaderF16Unavailable(WebLLMWidgetError):
    code = "no-shader-f16"


class OutOfGPUMemory(WebLLMWidgetError):
    code = "out-of-memory"


class DeviceLost(WebLLMWidgetError):
    code = "device-lost"


class BadArtifact(WebLLMWidgetError):
    code = "bad-artifact"


class BadModel(WebLLMWidgetError):
    """The model id, folder, checkpoint or file cannot be used."""

    code = "bad-model"


class ModelUnreachable(WebLLMWidgetError):
    """The page cannot reach the server a model is fetched from (URL or prebuilt id)."""

    code = "unreachable"


class ContextWindowExceeded(WebLLMWidgetError):
    code = "context-overflow"


class Aborted(WebLLMWidgetError):
    code = "aborted"


class UnsupportedParameter(WebLLMWidgetError, TypeError):
    """A request parameter this model or engine cannot honour; ``detail["parameter"]`` names it (also a TypeError,
    as Python raises for an unexpected keyword)."""

    code = "unsupported"

    @property
    def parameter(self) -> str | None:
        return self.detail.get("parameter")


class BadRequest(WebLLMWidgetError, ValueError):
    """A request parameter with a value that cannot be used (a schema or grammar that does not compile, a
    logit_bias out of range, ...)."""

    code = "bad-request"


class KernelError(WebLLMWidgetError):
    """A GPU kernel failed, or was called with the wrong shapes or dtypes."""

    code = "kernel-error"


class PageTimeout(WebLLMWidgetError):
    code = "timeout"


class HostHoldsMessages(WebLLMWidgetError):
    """Awaiting the page inside a running cell of a host that delivers widget messages only after the cell ends
    (marimo): the wait could never end, so it is refused at once (see :mod:`webllm_widget.hosts`)."""

    code = "host-holds-messages"


_BY_CODE = {
    cls.code: cls
    for cls in (
        ToolchainMissing, CompileError, WebGPUUnavailable, ShaderF16Unavailable, OutOfGPUMemory,
        DeviceLost, BadArtifact, BadModel, ModelUnreachable, ContextWindowExceeded, Aborted, KernelError, PageTimeout,
        HostHoldsMessages, UnsupportedParameter, BadRequest,
    )
}


def from_page(payload: dict) -> WebLLMWidgetError:
    """Turn an ``error`` message from the page into the matching Python exception."""
    code = str(payload.get("code") or "error")
    cls = _BY_CODE.get(code, WebLLMWidgetError)
    return cls(str(payload.get("message") or "the page reported an error"), code=code,
               detail={k: v for k, v in payload.items() if k not in ("code", "message", "v", "kind")})
