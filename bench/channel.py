"""Benchmark: kernel -> page artifact transfer (comm and HTTP route) and page -> kernel message latency, in real JupyterLab.

Runs a notebook in a real ``jupyter lab`` opened in headless Chromium. The notebook's widget uses the
project's transport (``Channel`` + ``BlobSender`` in the kernel, ``BlobLoader`` in the page) to move
``--size-mb`` of random bytes from kernel to page Cache Storage (cache emptied first, fresh bytes each
run, sha256 verified in the page, then handed on as model files are, or also stored): over the comm, then on "auto", which takes the server extension's
route (``webllm_widget.server``), with Jupyter's own ``/files/`` as a same-run baseline. Then a Web
Worker in the page emits ``--messages`` tokens, relayed like the chat engine's, while the cell awaits,
and the kernel records each one's latency. The load average goes with the numbers (shared machine).

Chromium runs as a plain process; Playwright drives it over CDP to open the notebook and run it, then detaches
(``--attached`` keeps it): while attached, Playwright's Network domain makes Chromium copy every WebSocket
frame to the driver, and the comm reached 33 MB/s attached vs 79 MB/s detached in one back-to-back trial
(HTTP 153 vs 251). A user's browser has no DevTools client, so the detached figure is the user's.

    python bench/channel.py [--size-mb 128] [--runs 3] [--messages 1000] [--chunk-mb 4 16] [--out bench/results]

Writes ``channel.json``. Targets (issue 5): HTTP >= 200 MB/s, comm >= 50 MB/s, p50 < 2 ms, p99 < 5 ms.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH, BUILD, ROOT, esbuild, write_result  # noqa: E402

NOTEBOOK_CELLS = [
    "import sys; sys.path.insert(0, {bench!r})\n"
    "from channel_kernel import ChannelBench, run\n"
    "w = ChannelBench(); w",
    # The driver may be detached while this runs: a failure is written where the driver waits for the result.
    "try:\n"
    "    r = await run(w, {out!r}, size_mb={size_mb}, runs={runs}, messages={messages}, interval_ms={interval_ms},\n"
    "                  chunk_mb={chunk_mb!r}, windows={windows!r}, ready_timeout={ready_timeout})\n"
    "except BaseException:\n"
    "    import json, traceback; open({out!r}, 'w').write(json.dumps({{'error': traceback.format_exc()}})); raise\n"
    "print(r['comm']['MBps']['median'], r.get('http'), r['latency_ms'])",
]


def write_notebook(path: Path, **fmt) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c.format(**fmt)) for c in NOTEBOOK_CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--interval-ms", type=float, default=2.0, help="pause between the page's messages")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    ap.add_argument("--chunk-mb", type=float, nargs="*", default=[], help="also time the comm at these chunk sizes")
    ap.add_argument("--window", type=int, nargs="*", default=[], help="also time the comm at these windows (chunks in flight)")
    ap.add_argument("--ready-timeout", type=float, default=300, help="seconds for the widget's page to say ready")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--attached", action="store_true",
                    help="keep the Playwright driver attached while measuring (it records every WebSocket frame, "
                         "which halves the comm); by default it detaches once the notebook runs, as a user's "
                         "browser has no DevTools client")
    args = ap.parse_args(argv)

    from browser import DetachableChromium
    from jupyter import JupyterLab

    esbuild(BENCH / "js" / "channel_widget.ts", BUILD / "channel_widget.js")
    with tempfile.TemporaryDirectory(prefix="wlw-bench-channel-") as tmp:
        tmp = Path(tmp)
        root, cache, cfg = tmp / "nb", tmp / "cache", tmp / "jupyter-config"
        root.mkdir(); cache.mkdir()
        # Enable the server extension for this server whether or not the package's data file was installed.
        (cfg / "jupyter_server_config.d").mkdir(parents=True)
        (cfg / "jupyter_server_config.d" / "webllm_widget.json").write_text(
            (ROOT / "jupyter-config" / "jupyter_server_config.d" / "webllm_widget.json").read_text())
        out = tmp / "channel-result.json"
        write_notebook(root / "channel.ipynb", bench=str(BENCH), out=str(out), size_mb=args.size_mb,
                       runs=args.runs, messages=args.messages, interval_ms=args.interval_ms,
                       chunk_mb=tuple(args.chunk_mb), windows=tuple(args.window), ready_timeout=args.ready_timeout)
        env = {"WEBLLM_WIDGET_CACHE": str(cache),
               "JUPYTER_CONFIG_PATH": os.pathsep.join(filter(None, [str(cfg), os.environ.get("JUPYTER_CONFIG_PATH")])),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
        t0 = time.monotonic()
        load_before = [round(x, 2) for x in os.getloadavg()]
        with JupyterLab(root, env=env) as lab:
            browser = DetachableChromium()
            errors: list[str] = []
            try:
                page = lab.open_notebook(browser, "channel.ipynb")
                lab.run_all(page)
                if not args.attached:
                    # Wait until the widget's page side is up (its cell ran), then let the page run alone.
                    page.wait_for_function("() => document.querySelector('.wlw-channel-bench') !== null",
                                           timeout=args.ready_timeout * 1000)
                    errors = list(lab.console_errors())
                    browser.detach()
                    page = None
                data = lab.wait_for_file(out, timeout=args.timeout, page=page)
                if page is not None:
                    errors = list(lab.console_errors())
            finally:
                browser.close()
            ext_loaded = "webllm-widget: serving blobs" in lab.server_log()
    if "error" in data:
        raise RuntimeError(f"the benchmark's notebook cell failed:\n{data['error']}")
    data["devtools_attached"] = bool(args.attached)
    data["server_extension_loaded"] = ext_loaded
    data["loadavg_before"] = load_before
    data["console_errors"] = errors[:10]
    data["wall_s"] = round(time.monotonic() - t0, 1)
    data["targets"] = {"http_MBps": 200, "comm_MBps": 50, "latency_p50_ms": 2, "latency_p99_ms": 5}
    path = write_result("channel", data, args.out)
    http = data.get("http", {})
    nan = {"median": float("nan")}
    print(f"into the page (verified): comm {data['comm']['MBps']['median']:.0f} MB/s, "
          f"http {http.get('MBps', nan)['median']:.0f} MB/s; stored too: comm "
          f"{data['comm']['MBps_stored']['median']:.0f}, http {http.get('MBps_stored', nan)['median']:.0f} MB/s; "
          f"/files/ {http.get('files_endpoint_MBps_stored', {}).get('median', float('nan')):.0f} MB/s; "
          f"latency p50 {data['latency_ms']['p50']:.2f} ms p99 {data['latency_ms']['p99']:.2f} ms; "
          f"load {load_before} -> {[round(x, 2) for x in os.getloadavg()]} -> {path}")
    return data


if __name__ == "__main__":
    main()
