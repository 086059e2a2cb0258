"""marimo driver for end-to-end tests: a real ``marimo run`` (or ``marimo edit``) server on loopback, a notebook
opened in the WebGPU Chromium.

``marimo run`` executes every cell when a page opens the app, and runs cells again when a UI element they read
changes (a button, or a widget shown with ``mo.ui.anywidget``). Results come back the way the Jupyter driver
takes them: the notebook writes JSON files into a folder named by an environment variable.

Example::

    with MarimoServer(NOTEBOOKS / "chat_marimo.py", env={"WEBLLM_WIDGET_RESULTS": str(out)}) as mo:
        page = mo.open(chromium)
        state = mo.wait_for_file(out / "state-1.json", timeout=300)

The server runs this interpreter with the given environment, so env vars reach the notebook (``os.environ``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from browser import ROOT, free_port
from server_process import ServerProcess


class MarimoServer(ServerProcess):
    """``marimo run`` (``mode="run"``) or ``marimo edit`` of ``notebook`` on a free loopback port, no token."""

    def __init__(self, notebook: str | os.PathLike, *, mode: str = "run", env: dict[str, str] | None = None,
                 start_timeout: float = 90):
        if mode not in ("run", "edit"):
            raise ValueError(f"mode must be 'run' or 'edit', not {mode!r}")
        self.notebook = Path(notebook)
        self.mode = mode
        self.port = free_port()
        self.env = env or {}
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self._home = tempfile.mkdtemp(prefix="wlw-marimo-")
        self.log_path = Path(self._home) / "server.log"
        self.console: list[str] = []  # console messages and page errors of the pages this driver opened

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "MarimoServer":
        env = dict(os.environ)
        env.update(self.env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
        env["MARIMO_SKIP_UPDATE_CHECK"] = "1"  # no network here
        env["HOME"] = self._home  # marimo's own config and state stay out of the user's home
        env.setdefault("XDG_CACHE_HOME", str(Path(os.path.expanduser("~")) / ".cache"))  # model builds stay cached
        cmd = [sys.executable, "-m", "marimo", self.mode, str(self.notebook), "--headless", "--no-token",
               "--host", "127.0.0.1", "--port", str(self.port), "--no-sandbox"]
        self._start(cmd, f"marimo {self.mode}", self.url + "/health", self.start_timeout,
                    cwd=self.notebook.parent, env=env, stdin=subprocess.DEVNULL)
        return self

    def open(self, browser: Any, timeout: float = 120) -> Any:
        """Open the app in a new page of ``browser`` (its cells start running)."""
        page = browser.new_page()
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        page.goto(self.url + "/", timeout=timeout * 1000)
        return page

    def wait_for_file(self, path: str | os.PathLike, timeout: float = 300) -> Any:
        """Wait until ``path`` exists and holds JSON; return it."""
        path = Path(path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                try:
                    return json.loads(path.read_text())
                except json.JSONDecodeError:
                    pass  # being written: read again
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"marimo exited with {self.proc.returncode}:\n{self.server_log()[-3000:]}")
            if "Traceback (most recent call last)" in self.server_log():  # a cell raised: no need to wait on
                raise AssertionError(f"a notebook cell failed:\n{self.server_log()[-4000:]}")
            time.sleep(0.3)
        raise TimeoutError(f"{path} did not appear within {timeout} s. Server log:\n{self.server_log()[-3000:]}\n"
                           f"Page console:\n" + "\n".join(self.console[-40:]))
