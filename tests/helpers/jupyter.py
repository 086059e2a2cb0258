"""Jupyter driver for end-to-end tests: a real ``jupyter lab`` or ``jupyter notebook`` (Notebook 7) server, a
notebook opened in the WebGPU Chromium.

Both apps are JupyterLab's front end underneath: started with ``expose_app_in_browser`` they put the app at
``window.jupyterapp``, whose ``shell.currentWidget`` is the open notebook and whose commands include
``notebook:run-all-cells``. Only the server's module, its app options and the notebook's URL differ.

Example::

    with JupyterLab(root_dir, env={"RESULTS": str(out)}) as lab:      # or JupyterNotebook(...)
        page = lab.open_notebook(chromium, "ml_compilation.ipynb")
        lab.run_all(page)
        data = lab.wait_for_file(out, timeout=600)      # the notebook writes its results there
        errors = lab.console_errors()

The kernel runs this interpreter (``sys.executable``) with the server's environment, so env vars
passed here reach the notebook (``os.environ``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from browser import ROOT, free_port
from server_process import ServerProcess

NOTEBOOKS = ROOT / "notebooks"


#: Per app: the module ``python -m`` starts, its application class (for options), the URL of an open notebook.
APPS = {
    "lab": ("jupyterlab", "LabApp", "/lab/tree/"),
    "notebook": ("notebook", "JupyterNotebookApp", "/notebooks/"),
}


class JupyterServer(ServerProcess):
    """A ``jupyter lab`` (``app="lab"``) or ``jupyter notebook`` (``app="notebook"``, Notebook 7) server on a
    free loopback port, serving ``root_dir``; stopped on exit."""

    def __init__(self, root_dir: str | os.PathLike, *, app: str = "lab", env: dict[str, str] | None = None,
                 start_timeout: float = 90):
        if app not in APPS:
            raise ValueError(f"app must be one of {sorted(APPS)}, not {app!r}")
        self.app = app
        self.root_dir = Path(root_dir)
        self.port = free_port()
        self.env = env or {}
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self._home = tempfile.mkdtemp(prefix="wlw-jupyter-")
        self.log_path = Path(self._home) / "server.log"
        self.console: list[str] = []  # console messages of the pages this driver opened
        self.app_errors: list[str] = []  # errors the app's own code throws on any page (see _page_error)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "JupyterServer":
        env = dict(os.environ)
        env.update(self.env)
        # Fresh runtime/workspace state, so no earlier session's layout or kernels leak in.
        env["JUPYTER_RUNTIME_DIR"] = str(Path(self._home) / "runtime")
        if sys.prefix != sys.base_prefix:
            # In a venv made with --system-site-packages (CI's clean clone) Jupyter looks for lab extensions
            # only under the venv, not where ipywidgets/anywidget installed theirs: without this JupyterLab
            # runs with no widget manager, and every widget test waits for a page that never renders.
            base_data = str(Path(sys.base_prefix) / "share" / "jupyter")
            env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [env.get("JUPYTER_PATH"), base_data]))
        env.setdefault("JUPYTERLAB_WORKSPACES_DIR", str(Path(self._home) / "workspaces"))
        # User settings (the theme a test switches to, ...) stay with this server, not in ~/.jupyter.
        env.setdefault("JUPYTERLAB_SETTINGS_DIR", str(Path(self._home) / "user-settings"))
        module, cls, _ = APPS[self.app]
        cmd = [sys.executable, "-m", module, "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
               "--ServerApp.token=", "--ServerApp.password=", "--allow-root",
               f"--{cls}.expose_app_in_browser=True", f"--ServerApp.root_dir={self.root_dir}",
               f"--{cls}.workspaces_dir={Path(self._home) / 'workspaces'}", "--ServerApp.disable_check_xsrf=True"]
        if self.app == "lab":
            cmd += ["--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        self._start(cmd, f"jupyter {self.app}", self.url + "/api/status", self.start_timeout, cwd=self.root_dir, env=env)
        return self

    # -- driving a notebook -------------------------------------------------------------------------

    def open_notebook(self, browser: Any, relpath: str, timeout: float = 120) -> Any:
        """Open ``relpath`` (relative to the root dir) in a new page; return once its kernel is idle."""
        page = browser.new_page()
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", self._page_error)
        page.goto(f"{self.url}{APPS[self.app][2]}{relpath}", timeout=timeout * 1000)
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell", timeout=timeout * 1000)
        # Without the widget manager no widget ever renders and a test would only see a timeout much later.
        if not page.evaluate("() => window.jupyterapp.hasPlugin('@jupyter-widgets/jupyterlab-manager:plugin')"):
            raise RuntimeError(f"jupyter {self.app} has no widget manager (@jupyter-widgets/jupyterlab-manager): its lab "
                               "extension is not in Jupyter's data path (`jupyter --paths`; a venv hides the base "
                               "interpreter's share/jupyter). Install ipywidgets/anywidget into this environment.")
        self.wait_kernel_idle(page, timeout)
        return page

    def _page_error(self, e: Any) -> None:
        stack = str(getattr(e, "stack", "") or "")
        if self.app == "notebook" and "reading 'schema'" in str(e) and "/static/notebook/notebook_core." in stack:
            # Notebook 7.6's own: thrown by its core bundle on every notebook page, an empty notebook included
            # (seen with notebook 7.6.5); not the widget's doing, so kept apart from the page's errors.
            self.app_errors.append(f"pageerror: {e}")
            return
        self.console.append(f"pageerror: {e}")

    def wait_kernel_idle(self, page: Any, timeout: float = 120) -> None:
        page.wait_for_function(
            """() => {
                const w = window.jupyterapp.shell.currentWidget;
                const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
                return !!k && w.sessionContext.isReady && k.status === 'idle';
            }""", timeout=timeout * 1000, polling=250)

    def run_all(self, page: Any) -> None:
        """Start ``notebook:run-all-cells`` (not awaited: it resolves only when every cell ran)."""
        page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

    def wait_for_file(self, path: str | os.PathLike, timeout: float = 600, page: Any = None) -> Any:
        """Wait until ``path`` exists and holds JSON; return it. With ``page``, fail early on a cell error."""
        path = Path(path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                try:
                    return json.loads(path.read_text())
                except json.JSONDecodeError:
                    pass  # written non-atomically by someone: read again
            if page is not None:
                err = self.first_error_output(page)
                if err:
                    raise AssertionError(f"a notebook cell failed:\n{err}")
            time.sleep(0.5)
        raise TimeoutError(f"{path} did not appear within {timeout} s. Outputs:\n{self.outputs_text(page)[-4000:] if page else ''}")

    def outputs(self, page: Any) -> list[list[dict]]:
        """Each cell's outputs as nbformat dicts (from the notebook model in the page)."""
        return page.evaluate(
            """() => {
                const nb = window.jupyterapp.shell.currentWidget.content.model;
                const out = [];
                for (let i = 0; i < nb.cells.length; i++) {
                    const c = nb.cells.get(i);
                    out.push(c.type === 'code' ? c.toJSON().outputs : []);
                }
                return out;
            }""")

    def first_error_output(self, page: Any) -> str:
        for cell in self.outputs(page):
            for o in cell:
                if o.get("output_type") == "error":
                    return f"{o.get('ename')}: {o.get('evalue')}\n" + "\n".join(o.get("traceback", []))[-3000:]
        return ""

    def outputs_text(self, page: Any) -> str:
        parts = []
        for i, cell in enumerate(self.outputs(page)):
            for o in cell:
                if "text" in o:
                    parts.append(f"[{i}] {''.join(o['text']) if isinstance(o['text'], list) else o['text']}")
                elif o.get("output_type") == "error":
                    parts.append(f"[{i}] {o.get('ename')}: {o.get('evalue')}")
                elif "data" in o and "text/plain" in o["data"]:
                    t = o["data"]["text/plain"]
                    parts.append(f"[{i}] {''.join(t) if isinstance(t, list) else t}")
        return "\n".join(parts)

    def record_comm(self, page: Any) -> None:
        """Start logging the page's widget comm traffic (opens, closes, our protocol's message kinds), for
        :meth:`comm_log` when a test fails. Blob chunks and acks are left out (thousands of them)."""
        page.evaluate("""() => {
            window.__wlwComm = [];
            const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
            k.anyMessage.connect((_, a) => {
                const m = a.msg, t = m.header.msg_type;
                if (!t.startsWith('comm')) return;
                const d = (m.content && m.content.data) || {}, kind = (d.content && d.content.kind) || '';
                if (['blob', 'ack', 'need-blob', 'progress', 'token'].includes(kind)) return;
                if (d.method === 'update' && !('messages' in (d.state || {}))) return;
                window.__wlwComm.push([Math.round(performance.now()), a.direction, t,
                                      String(m.content.comm_id || '').slice(0, 8), d.method || '', kind]);
            });
        }""")

    def comm_log(self, page: Any) -> list:
        """What :meth:`record_comm` saw: ``[ms, send|recv, msg_type, comm id prefix, method, kind]`` rows."""
        try:
            return page.evaluate("() => window.__wlwComm || []")
        except Exception as e:  # the page may be gone
            return [f"no comm log: {e}"]

    def record_widget(self, page: Any, every_ms: int = 40) -> None:
        """Start sampling what the Chat widgets on the page show (load progress bar and its text, the stats line,
        status), keeping each distinct sample, for :meth:`widget_samples`."""
        page.evaluate("""(ms) => {
            window.__wlwSamples = []; let last = '';
            setInterval(() => {
                const c = document.querySelector('.wlw-chat');
                if (!c) return;
                const box = c.querySelector('.wlw-progress');
                const s = {status: c.querySelector('.wlw-status')?.textContent ?? '',
                           progress: box && !box.hidden ? {value: box.querySelector('progress').value,
                                                            text: box.querySelector('.wlw-progress-text').textContent} : null,
                           stats: c.querySelector('.wlw-stats')?.textContent ?? ''};
                const key = JSON.stringify(s);
                if (key !== last) { last = key; window.__wlwSamples.push(s); }
            }, ms);
        }""", every_ms)

    def widget_samples(self, page: Any) -> list[dict]:
        return page.evaluate("() => window.__wlwSamples || []")

    def set_theme(self, page: Any, theme: str, timeout: float = 60) -> None:
        """Switch JupyterLab's theme (``"JupyterLab Light"`` / ``"JupyterLab Dark"``) and wait until it applies."""
        light = "true" if "Light" in theme else "false"
        page.evaluate("(t) => { window.jupyterapp.commands.execute('apputils:change-theme', {theme: t}); }", theme)
        page.wait_for_function(f"() => document.body.dataset.jpThemeLight === '{light}' && document.body.dataset"
                               f".jpThemeName === {json.dumps(theme)}", timeout=timeout * 1000)
        page.wait_for_timeout(300)  # the theme's stylesheet is swapped in; let the page restyle

    def console_errors(self) -> list[str]:
        """Errors logged by the pages this driver opened (not by other tests' pages in the same browser)."""
        return [m for m in self.console if m.startswith(("error", "pageerror"))]

    def route_status(self) -> dict:
        """The server extension's status route (``webllm-widget/status``): what it served over HTTP so far."""
        with urllib.request.urlopen(self.url + "/webllm-widget/status", timeout=10) as r:
            return json.loads(r.read())


class JupyterLab(JupyterServer):
    """``jupyter lab``."""

    def __init__(self, root_dir: str | os.PathLike, **kw: Any):
        super().__init__(root_dir, app="lab", **kw)


class JupyterNotebook(JupyterServer):
    """``jupyter notebook`` (Notebook 7)."""

    def __init__(self, root_dir: str | os.PathLike, **kw: Any):
        super().__init__(root_dir, app="notebook", **kw)


#: Page JS that runs code in the open notebook's kernel and returns its printed text (errors marked).
KERNEL_EXEC = """async ([code, ms]) => {
  const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const fut = k.requestExecute({code, store_history: false});
  let out = "";
  fut.onIOPub = (msg) => {
    const t = msg.header.msg_type, c = msg.content;
    if (t === 'stream') out += c.text;
    else if (t === 'error') out += `\\n@@kernel-error@@ ${c.ename}: ${c.evalue}`;
  };
  // page.evaluate has no timeout of its own: a kernel that never answers must not hang the test
  const late = new Promise(r => setTimeout(() => r('late'), ms));
  if (await Promise.race([fut.done, late]) === 'late') return `${out}\\n@@kernel-error@@ timeout: the kernel did not finish in ${ms} ms; output so far: ${out}`;
  return out;
}"""


def kernel(page, code: str, timeout: float = 120) -> dict:
    """Run ``code`` in the notebook's kernel (it must print one JSON line last) and return the parsed JSON.

    The code runs as its own execute request (top-level ``await`` works); any error fails the test."""
    out = page.evaluate(KERNEL_EXEC, [code, int(timeout * 1000)])
    assert "@@kernel-error@@" not in out, out
    return json.loads(out.strip().splitlines()[-1])


def wait_notebook(lab, page, n_code_cells: int, timeout: float) -> list[list[dict]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        err = lab.first_error_output(page)
        if err:
            raise AssertionError(f"a notebook cell failed:\n{err}")
        outs = lab.outputs(page)
        code_outs = [o for o in outs if o is not None]
        if len(code_outs) >= n_code_cells and outs[-1]:
            return outs
        time.sleep(1)
    raise TimeoutError(lab.outputs_text(page)[-4000:])


def text_of(cell_outputs: list[dict]) -> str:
    parts = []
    for o in cell_outputs:
        if "text" in o:
            parts.append("".join(o["text"]) if isinstance(o["text"], list) else o["text"])
        elif "data" in o and "text/plain" in o["data"]:
            t = o["data"]["text/plain"]
            parts.append("".join(t) if isinstance(t, list) else t)
    return "".join(parts)
