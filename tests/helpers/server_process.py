"""A notebook server run as a child process in its own process group, with its log in a file and a temporary
home: what the Jupyter and marimo drivers share (stopping the server and its kernels together, reading the log)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any


class ServerProcess:
    """Subclasses start ``self.proc`` (``start_new_session=True``), write ``self.log_path`` through ``self._log``
    and keep their settings under ``self._home``."""

    proc: subprocess.Popen | None = None
    log_path: Path
    _log: Any = None
    _home: str | os.PathLike = ""

    def _start(self, cmd: list[str], what: str, health_url: str, timeout: float, **popen: Any) -> None:
        """Start ``cmd`` in its own process group, logging to ``log_path``, and wait until ``health_url`` answers
        200; a server that exits or stays silent for ``timeout`` s is stopped and reported with its log."""
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, **popen)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {self.proc.returncode}:\n{self.server_log()[-3000:]}")
            try:
                with urllib.request.urlopen(health_url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.__exit__()
        raise RuntimeError(f"{what} did not answer within {timeout} s:\n{self.server_log()[-3000:]}")

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # Its own process group: the server and the kernels it started stop together.
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        if self._log:
            self._log.close()
        if self._home:
            shutil.rmtree(self._home, ignore_errors=True)

    def server_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""
