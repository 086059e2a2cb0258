"""Named errors: each carries a code a program can test and a sentence a person can act on.

This module is the one table of error codes: :data:`ERRORS` maps each code to its class, and ``raised_by``
says which side detects it. The page's codes (``ErrorCode``, ``PageErrorCode`` in
``js/src/wire/schema.gen.ts``) are generated from it by ``scripts/gen_wire_ts.py``, so a code the page
sends always arrives here as a named exception (``tests/unit/test_wire_schema.py`` checks both).
"""
from __future__ import annotations

from typing import ClassVar, Literal


class WebLLMWidgetError(Exception):
    """Base class, and the class of code ``"error"`` (a failure nothing more specific names).

    ``code`` is stable and is one of :data:`ERRORS`; ``raised_by`` says who detects it: the kernel, the page
    (then it arrives in an ``error`` message), or both.
    """

    code = "error"
    raised_by: ClassVar[Literal["kernel", "page", "both"]] = "both"

    def __init__(self, message: str, *, code: str | None = None, detail: dict | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.detail = detail or {}

    def __str__(self) -> str:  # "[code] message" so logs and tracebacks show the code
        return f"[{self.code}] {self.args[0]}"


class ToolchainMissing(WebLLMWidgetError):
    """A compiler tool (apache-tvm, emscripten) is missing or unusable."""

    code = "toolchain-missing"
    raised_by = "kernel"


class CompilerNotInstalled(ToolchainMissing):
    """Compiling needs apache-tvm, which comes with the ``compile`` extra: ``pip install 'webllm-widget[compile]'``."""


class CompileError(WebLLMWidgetError):
    """Compiling a model or a function failed."""

    code = "compile-error"
    raised_by = "kernel"


class WebGPUUnavailable(WebLLMWidgetError):
    """The page has no WebGPU adapter (or the model needs one and ``device='webgpu'`` was asked for)."""

    code = "no-webgpu"


class ShaderF16Unavailable(WebLLMWidgetError):
    """The model computes in float16 and the page's adapter lacks ``shader-f16``."""

    code = "no-shader-f16"
    raised_by = "page"


class OutOfGPUMemory(WebLLMWidgetError):
    """The model does not fit the GPU's (or the page's) memory."""

    code = "out-of-memory"
    raised_by = "page"


class DeviceLost(WebLLMWidgetError):
    """The page's GPU device was lost (driver reset, out of memory)."""

    code = "device-lost"
    raised_by = "page"


class BadArtifact(WebLLMWidgetError):
    """A file (engine bundle, library, weights, tokenizer, config) is missing, damaged or not loadable."""

    code = "bad-artifact"


class BadModel(WebLLMWidgetError):
    """The model id, folder, checkpoint or file cannot be used."""

    code = "bad-model"


class ModelUnreachable(WebLLMWidgetError):
    """The page cannot reach the server a model is fetched from (URL or prebuilt id)."""

    code = "unreachable"
    raised_by = "page"


class StorageQuotaExceeded(WebLLMWidgetError):
    """The browser's storage for the page is full: a model's files could not be cached. Nothing of it was kept;
    the message (and ``detail["cached"]``) names the cached models that could be deleted (``chat.cache.delete``)."""

    code = "storage-quota"
    raised_by = "page"


class ContextWindowExceeded(WebLLMWidgetError):
    """The conversation no longer fits the model's context window."""

    code = "context-overflow"


class Aborted(WebLLMWidgetError):
    """The request was stopped or cancelled."""

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


class Busy(WebLLMWidgetError):
    """The page is already generating an answer for this chat."""

    code = "busy"
    raised_by = "page"


class KernelError(WebLLMWidgetError):
    """A GPU kernel failed, or was called with the wrong shapes or dtypes."""

    code = "kernel-error"


class PageTimeout(WebLLMWidgetError):
    """The page did not answer in time (no page shows the widget, or it hangs)."""

    code = "timeout"
    raised_by = "kernel"


class HostHoldsMessages(WebLLMWidgetError):
    """Awaiting the page inside a running cell of a host that delivers widget messages only after the cell ends
    (marimo): the wait could never end, so it is refused at once (see :mod:`webllm_widget.hosts`)."""

    code = "host-holds-messages"
    raised_by = "kernel"


class ProtocolMismatch(WebLLMWidgetError):
    """Kernel and page speak different protocol versions (webllm-widget upgraded without a page reload)."""

    code = "protocol-mismatch"


class PageReloaded(WebLLMWidgetError):
    """The page was reloaded while a request ran: the new page knows nothing of it."""

    code = "page-reloaded"
    raised_by = "kernel"


class ViewUnreachable(WebLLMWidgetError):
    """No view of the widget acknowledged a request: the host did not deliver it (Colab hands a later cell's
    messages only to the newest output), or the widget is not shown anywhere."""

    code = "view-unreachable"
    raised_by = "kernel"


#: Every error code and the class raised for it.
ERRORS: dict[str, type[WebLLMWidgetError]] = {
    cls.code: cls
    for cls in (
        WebLLMWidgetError, ToolchainMissing, CompileError, WebGPUUnavailable, ShaderF16Unavailable, OutOfGPUMemory,
        DeviceLost, BadArtifact, BadModel, ModelUnreachable, StorageQuotaExceeded, ContextWindowExceeded, Aborted, Busy,
        KernelError, PageTimeout, ProtocolMismatch, PageReloaded, HostHoldsMessages, ViewUnreachable,
        UnsupportedParameter, BadRequest,
    )
}
#: The codes the page may send in an ``error`` message.
PAGE_CODES: tuple[str, ...] = tuple(c for c, cls in ERRORS.items() if cls.raised_by != "kernel")


def from_page(payload: dict) -> WebLLMWidgetError:
    """Turn an ``error`` message from the page into the matching Python exception.

    Its ``detail`` holds the message's ``detail`` and the request ``id`` it answers (absent for a notice)."""
    code = str(payload.get("code") or "error")
    cls = ERRORS.get(code, WebLLMWidgetError)
    detail = dict(payload.get("detail") or {})
    detail.update({k: v for k, v in payload.items() if k not in ("code", "message", "v", "kind", "detail")})
    return cls(str(payload.get("message") or "the page reported an error"), code=code, detail=detail)
