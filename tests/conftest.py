"""Shared fixtures: headless Chromium with WebGPU, the loopback host server, widget host pages, JupyterLab.

Browser fixtures are session-scoped (one Chromium, one server) and torn down at the end.
Tests that use them must be marked ``@pytest.mark.browser`` (and ``jupyter`` for JupyterLab).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

from browser import STATIC, HostServer, WidgetHost, launch_chromium, stop_playwright  # noqa: E402
import prebuild  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--full-matrix", action="store_true", default=False,
                     help="also run the opt-in cases marked full_matrix (e.g. every GGUF family x block type x "
                          "device in test_family_logits; CI runs a subset)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--full-matrix") or os.environ.get("WEBLLM_WIDGET_FULL_MATRIX") == "1":
        return
    skip = pytest.mark.skip(reason="opt-in (full_matrix): run with --full-matrix or WEBLLM_WIDGET_FULL_MATRIX=1")
    for item in items:
        if "full_matrix" in item.keywords:
            item.add_marker(skip)


def pytest_collection_finish(session):
    """Start the background builds of the model folders and libraries the selected tests need (tests/helpers/
    prebuild.py): later tests then find them built, or wait for the build in flight, instead of building cold."""
    session.config._webllm_prebuild = prebuild.start(session.config, session.items)


def pytest_terminal_summary(terminalreporter, config):
    pb = getattr(config, "_webllm_prebuild", None)
    if pb is not None:
        pb.stop()
        for line in pb.summary():
            terminalreporter.write_line(line)


def pytest_unconfigure(config):
    pb = getattr(config, "_webllm_prebuild", None)
    if pb is not None:
        pb.stop()


def _need_bundles() -> None:
    if not (STATIC / "gpu_widget.js").exists() or not (STATIC / "tvmjs.js").exists():
        pytest.fail("JS bundles are missing: run `npm ci && npm run build` in js/ (or `make setup`)")


@pytest.fixture(scope="session")
def host_server():
    """Loopback Tornado server (static bundles, /host.html, /blank.html, added routes, comm WebSocket)."""
    srv = HostServer()
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def _playwright_session():
    yield
    stop_playwright()


@pytest.fixture(scope="session")
def chromium(host_server, _playwright_session):
    """Headless Chromium whose pages get a WebGPU adapter (SwiftShader here); ``.adapter`` says which."""
    browser = launch_chromium(host_server.origin + "/blank.html", webgpu=True)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def chromium_no_webgpu(host_server, _playwright_session):
    """Headless Chromium started without ``--enable-unsafe-webgpu`` (and without GPU)."""
    browser = launch_chromium(host_server.origin + "/blank.html", webgpu=False)
    yield browser
    browser.close()


@pytest.fixture
def widget_host(host_server, chromium):
    """A fresh host page in the WebGPU Chromium; widgets created inside ``widget_host.run(...)`` render there."""
    _need_bundles()
    with WidgetHost(host_server, chromium) as host:
        yield host


@pytest.fixture
def widget_host_no_webgpu(host_server, chromium_no_webgpu):
    _need_bundles()
    with WidgetHost(host_server, chromium_no_webgpu) as host:
        yield host


@pytest.fixture
def bundle_page(host_server, chromium):
    """A blank page on the loopback origin where ``import('/static/<bundle>.js')`` works."""
    page = chromium.new_page()
    page.goto(host_server.origin + "/blank.html")
    yield page
    page.close()


@pytest.fixture(scope="session")
def tiny_folder() -> Path:
    """The tiny random-weight Llama (seed 0) as a q4f32_1 WebGPU model folder, built once (cached by content)."""
    from tiny import TinyLlama

    from webllm_widget.cache import cache_dir
    from webllm_widget.compile.pipeline import build_model_folder

    hf = TinyLlama.make(seed=0).write_hf(cache_dir() / "test-sources" / "tiny-llama-seed0")
    return build_model_folder(hf, quantization="q4f32_1", progress=False)


@pytest.fixture(scope="session")
def project_wheel() -> Path:
    """The project's wheel (engine bundle and the built-in model's libraries inside), built once per content hash."""
    from wheels import project_wheel as build

    return build()
