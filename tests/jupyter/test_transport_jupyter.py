"""In real JupyterLab, blobs reach the page over the server extension's HTTP route when the server runs it,
and over the widget's comm when it does not (or cannot serve the kernel's blob); either way the page stores
exactly the offered bytes.

The widget is the channel benchmark's (bench/channel_kernel.py + bench/js/channel_widget.ts): the kernel's
``BlobSender`` and the page's ``BlobLoader`` are the product code, only the buttons are the benchmark's.
"""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

pytestmark = [pytest.mark.browser, pytest.mark.jupyter]

SIZES = {"file": 3 * (1 << 20) + 12345, "memory": (1 << 20) + 7}  # not whole chunks

CELLS = [
    "import sys; sys.path.insert(0, {bench!r})\n"
    "from channel_kernel import ChannelBench, load, _random_file\n"
    "w = ChannelBench(); w",
    "import json, os\n"
    "from webllm_widget.artifacts import Blob\n"
    "await w.ch.wait_ready(300)\n"
    "path, sha = _random_file({file_size})\n"
    "mem = os.urandom({mem_size})\n"
    "report = {{}}\n"
    "for name, blob in [('file', Blob.from_path(path, sha256=sha)), ('memory', Blob.from_bytes(mem, 'mem.bin'))]:\n"
    "    r = await load(w, blob, 'auto', check=True)\n"
    "    report[name] = {{'sha256': blob.sha256, 'digest': r['digest'], 'bytes': r['bytes'], 'via': r['via'],\n"
    "                    'kernel_comm_bytes': r['kernel_comm_bytes'],\n"
    "                    'kernel_published_bytes': r['kernel_published_bytes']}}\n"
    # A file damaged after its hash was recorded: the HTTP copy fails its check (and is not kept in Cache
    # Storage), the comm retry's bytes fail it too, and the load fails with bad-artifact.
    "bad, bad_sha = _random_file({mem_size})\n"
    "bad_blob = Blob.from_path(bad, sha256=bad_sha)\n"
    "b = bytearray(bad.read_bytes()); b[len(b) // 2] ^= 1; bad.write_bytes(bytes(b))\n"
    "comm0, pub0 = w.blobs.bytes_comm, w.blobs.bytes_published\n"
    "try:\n"
    "    await load(w, bad_blob, 'auto', check=True); code = None\n"
    "except Exception as e:\n"
    "    code = getattr(e, 'code', type(e).__name__)\n"
    "report['damaged'] = {{'sha256': bad_sha, 'code': code, 'kernel_comm_bytes': w.blobs.bytes_comm - comm0,\n"
    "                     'kernel_published_bytes': w.blobs.bytes_published - pub0}}\n"
    # A kernel whose cache dir the server does not serve (another WEBLLM_WIDGET_CACHE, another machine):
    # the page's GET fails and the same blob comes over the comm.
    "os.environ['WEBLLM_WIDGET_CACHE'] = {elsewhere!r}\n"
    "blob = Blob.from_bytes(os.urandom({mem_size}), 'elsewhere.bin')\n"
    "r = await load(w, blob, 'auto', check=True)\n"
    "report['elsewhere'] = {{'sha256': blob.sha256, 'digest': r['digest'], 'bytes': r['bytes'], 'via': r['via'],\n"
    "                       'kernel_comm_bytes': r['kernel_comm_bytes'], 'kernel_published_bytes': r['kernel_published_bytes'],\n"
    "                       'left_published': os.path.exists(os.path.join({elsewhere!r}, 'blobs', blob.sha256))}}\n"
    "open({out!r} + '.tmp', 'w').write(json.dumps(report)); os.replace({out!r} + '.tmp', {out!r})",
]


def _run(tmp_path: Path, *, extension: bool) -> tuple[dict, dict | None, str]:
    import nbformat
    from browser import launch_chromium
    from common import BENCH, BUILD, esbuild
    from jupyter import JupyterLab

    esbuild(BENCH / "js" / "channel_widget.ts", BUILD / "channel_widget.js")
    root, cache = tmp_path / "nb", tmp_path / "cache"
    root.mkdir()
    cache.mkdir()
    out = tmp_path / "report.json"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c.format(bench=str(BENCH), out=str(out), file_size=SIZES["file"],
                                                   mem_size=SIZES["memory"], elsewhere=str(tmp_path / "elsewhere")))
                for c in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(root / "transport.ipynb"))
    # Server and kernel share the cache dir, as they do for a user (the kernel inherits the server's env).
    env = {"WEBLLM_WIDGET_CACHE": str(cache)}
    if not extension:
        # The user's config dir is read last: it turns off what the package's data file turned on.
        cfg = tmp_path / "jupyter-config-dir"
        cfg.mkdir()
        (cfg / "jupyter_server_config.json").write_text(
            json.dumps({"ServerApp": {"jpserver_extensions": {"webllm_widget.server": False}}}))
        env["JUPYTER_CONFIG_DIR"] = str(cfg)
    with JupyterLab(root, env=env) as lab:
        browser = launch_chromium(lab.url + "/api/status", webgpu=False)
        try:
            page = lab.open_notebook(browser, "transport.ipynb")
            lab.run_all(page)
            report = lab.wait_for_file(out, timeout=600, page=page)
            report["cached"] = page.evaluate("""async () => (await (await caches.open('webllm-widget/blobs')).keys())
                                                   .map((r) => r.url.split('/').pop())""")
        finally:
            browser.close()
        try:
            with urllib.request.urlopen(lab.url + "/webllm-widget/status", timeout=10) as r:
                status = json.loads(r.read())
        except urllib.error.HTTPError as e:
            status = None if e.code == 404 else {"error": e.code}
        return report, status, lab.server_log()


def test_blobs_travel_over_the_http_route_when_the_server_runs_the_extension(tmp_path):
    report, status, log = _run(tmp_path, extension=True)
    # Enabled by the package's jupyter-config data file (etc/jupyter/jupyter_server_config.d), not by this test.
    assert status is not None and status.get("blobs") is True, f"route missing; server log:\n{log[-2000:]}"
    for name, size in SIZES.items():
        r = report[name]
        assert r["digest"] == r["sha256"] and r["bytes"] == size, (name, r)  # Cache Storage holds these bytes
        assert r["via"]["http"] == size and r["via"]["comm"] == 0 and r["via"]["http_failures"] == 0, (name, r)
        assert r["kernel_comm_bytes"] == 0 and r["kernel_published_bytes"] == size, (name, r)
    # served: the good blobs, and the damaged one's copy that failed the page's check
    assert status["bytes_served"] == sum(SIZES.values()) + SIZES["memory"] and status["blobs_served"] == len(SIZES) + 1
    # Damaged on disk: bad-artifact, after one comm retry; the HTTP copy that failed its check was deleted.
    r = report["damaged"]
    assert r["code"] == "bad-artifact" and r["kernel_comm_bytes"] == SIZES["memory"], r
    assert r["kernel_published_bytes"] == 0 and r["sha256"] not in report["cached"], (r, report["cached"])
    assert report["file"]["sha256"] in report["cached"]  # good blobs are there (the listing works)
    # Published where this server does not look: one failed GET, then the comm, and the stray copy removed.
    r = report["elsewhere"]
    assert r["digest"] == r["sha256"] and r["bytes"] == SIZES["memory"], r
    assert r["via"]["http_failures"] == 1 and r["via"]["http"] == 0 and r["via"]["comm"] == SIZES["memory"], r
    assert r["kernel_comm_bytes"] == SIZES["memory"] and r["kernel_published_bytes"] == 0 and not r["left_published"], r


def test_blobs_travel_over_the_comm_when_the_server_has_no_route(tmp_path):
    report, status, _log = _run(tmp_path, extension=False)
    assert status is None  # the route really is absent on this server
    for name, size in SIZES.items():
        r = report[name]
        assert r["digest"] == r["sha256"] and r["bytes"] == size, (name, r)
        assert r["via"]["comm"] == size and r["via"]["http"] == 0, (name, r)
        assert r["kernel_comm_bytes"] == size and r["kernel_published_bytes"] == 0, (name, r)
