"""Fixtures of the reliability suite: one browser, one built tiny model, one widget host page for the package.

Every case here asserts the exact error code of a fault and that the next normal request works, through
the real page (headless Chromium, SwiftShader WebGPU) and the real Chat widget. The tiny random-weight
Llama (tests/helpers/tiny.py) is used everywhere: its words are noise, so content is compared only against a
fresh greedy run of the same model, never against expected text.
"""
from __future__ import annotations

import pytest

from rel_host import FileServer, RelHost


@pytest.fixture(scope="package")
def rel(chromium):
    """The suite's widget host page (one page for the package; tests that need a fresh page open one)."""
    with RelHost(chromium) as h:
        yield h


@pytest.fixture(scope="package")
def file_server():
    s = FileServer()
    yield s
    s.close()

