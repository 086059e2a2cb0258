"""The page's TypeScript inside the Python suite: the type check over js/src (which includes the generated wire
types, so a message field or an error code the page uses and the schema lacks fails here) and the JS unit tests
(js/test/*.test.mjs under Node's runner: the KV-cache check, error mapping, the markdown renderer, the channel)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parents[2] / "js"


def _npm(script: str) -> subprocess.CompletedProcess:
    npm = shutil.which("npm")
    assert npm, "npm is missing: scripts/setup.sh installs nodejs and npm"
    assert (JS / "node_modules").is_dir(), "js/node_modules is missing: run `npm ci` in js/ (make setup does)"
    return subprocess.run([npm, "run", "--silent", script], cwd=JS, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("script", ["typecheck", "test"])
def test_npm_script_passes(script):
    r = _npm(script)
    assert r.returncode == 0, f"npm run {script} failed in js/:\n{r.stdout}\n{r.stderr}"
    if script == "test":
        assert re.search(r"\bfail 0\b", r.stdout) and re.search(r"\bpass [1-9]", r.stdout), r.stdout  # they ran
