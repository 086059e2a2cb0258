"""The wire schema is one definition for both languages: the page's TypeScript is generated from the Python, a field
or an error code added on one side alone fails here, and every code the page sends arrives as a named exception."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from webllm_widget import errors
from webllm_widget.protocol import Channel
from webllm_widget.wire import schema

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "js"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_wire_ts", ROOT / "scripts" / "gen_wire_ts.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_typescript_is_what_the_python_schema_generates():
    gen = _generator()
    committed = gen.OUT.read_text()
    assert committed == gen.render(), "js/src/wire/schema.gen.ts is stale: run python scripts/gen_wire_ts.py"


def test_a_field_added_to_the_python_schema_alone_changes_the_typescript(monkeypatch):
    gen = _generator()
    before = gen.render()
    fields = dict(schema.Done.fields())
    fields["extra"] = schema._Field("extra", str, True, "")
    monkeypatch.setitem(schema.Struct._field_cache, schema.Done, fields)
    after = gen.render()
    assert after != before and "  extra: string;" in after
    assert gen.OUT.read_text() != after  # so the test above fails until the TypeScript is regenerated


@pytest.mark.skipif(not (JS / "node_modules" / ".bin" / "tsc").exists(), reason="js/node_modules missing: npm ci in js/")
def test_a_field_or_a_code_the_page_adds_alone_fails_the_type_check(tmp_path):
    # The page sends through PageChannel.send<K>(kind, payload: PageSends[K]): what a message may carry.
    shutil.copy(JS / "src" / "wire" / "schema.gen.ts", tmp_path / "schema.gen.ts")
    head = ('import type { PageSends, PageErrorCode } from "./schema.gen";\n'
            'declare function send<K extends keyof PageSends>(kind: K, payload: PageSends[K]): void;\n')
    probes = {
        "ok.ts": 'send("token", { text: "Hi" });\nexport const c: PageErrorCode = "busy";\n',
        "field.ts": 'send("token", { text: "Hi", logprob: -1 });\n',
        "code.ts": 'export const c: PageErrorCode = "gpu-on-fire";\n',
    }
    for name, body in probes.items():
        (tmp_path / name).write_text(head + body)
    r = subprocess.run([str(JS / "node_modules" / ".bin" / "tsc"), "--noEmit", "--strict", "--target", "ES2022",
                        "--module", "ES2022", "--moduleResolution", "bundler", "--isolatedModules", *probes],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    errors = r.stdout.splitlines()
    assert not [e for e in errors if e.startswith("ok.ts")], r.stdout
    assert any(e.startswith("field.ts") and "logprob" in e for e in errors), r.stdout
    assert any(e.startswith("code.ts") and "gpu-on-fire" in e for e in errors), r.stdout


def test_every_error_code_is_a_named_python_exception():
    gen_ts = (JS / "src" / "wire" / "schema.gen.ts").read_text()
    table = dict(re.findall(r'^  "([a-z0-9-]+)": "(\w+)",$', gen_ts, re.M))
    assert table == {code: cls.__name__ for code, cls in errors.ERRORS.items()}
    for code in errors.PAGE_CODES:
        exc = errors.from_page({"v": 1, "kind": "error", "id": "k1", "code": code, "message": "m",
                                "detail": {"file": "x.wasm"}})
        assert type(exc) is errors.ERRORS[code] and exc.code == code
        assert exc.detail == {"file": "x.wasm", "id": "k1"}
        assert type(exc).__name__ != "WebLLMWidgetError" or code == "error"
    # every error class's code is in the table, as that class or a base of it
    def subclasses(c):
        return [c] + [s for k in c.__subclasses__() for s in subclasses(k)]
    for cls in subclasses(errors.WebLLMWidgetError):
        assert issubclass(cls, errors.ERRORS[cls.code]), cls


def _literal_codes(pattern: str, files) -> set[tuple[str, str]]:
    out = set()
    for f in files:
        for code in re.findall(pattern, f.read_text()):
            out.add((code, str(f.relative_to(ROOT))))
    return out


def test_no_code_is_used_that_the_table_lacks():
    """A code written as a literal anywhere in the source (Python or TypeScript) is one of the table's."""
    py = _literal_codes(r'\bcode\s*=\s*"([a-z0-9-]+)"', (ROOT / "src" / "webllm_widget").rglob("*.py"))
    ts_files = [f for f in (JS / "src").rglob("*.ts") if not f.name.endswith(".gen.ts")]
    ts = _literal_codes(r'(?:Error|PageError|EngineError|RuntimeError|CpuModelError)\(\s*"([a-z0-9-]+)"', ts_files)
    ts |= _literal_codes(r'\bcode:\s*"([a-z0-9-]+)"', ts_files)
    # the chat view shows this one itself (the kernel is gone, so nothing is sent): not a wire code
    unknown = {(c, f) for c, f in py | ts if c not in errors.ERRORS and c != "kernel-disconnected"}
    assert not unknown, f"error codes missing from webllm_widget/errors.py ERRORS: {sorted(unknown)}"
    assert len(py | ts) > 20  # the scan finds the codes in use


def test_structs_refuse_unknown_and_missing_fields_and_check_nested_records():
    spec = schema.ModelSpec(id="m", files=[{"name": "a.wasm", "sha256": "ab", "size": 3}], lib="a.wasm", schedule=None)
    assert spec == {"id": "m", "files": [{"name": "a.wasm", "sha256": "ab", "size": 3}], "lib": "a.wasm"}
    assert isinstance(spec["files"][0], schema.BlobRef)
    with pytest.raises(TypeError, match="no field 'color'"):
        schema.ModelSpec(id="m", color="red")
    with pytest.raises(TypeError, match="no field 'sha'"):
        schema.ModelSpec(id="m", cpu={"id": "c", "files": [{"name": "a", "sha": "x", "size": 1}]})
    with pytest.raises(TypeError, match="needs 'id'"):
        schema.ModelSpec(lib="a.wasm")
    assert spec.replace(device="cpu")["device"] == "cpu"
    # None is a value where the type allows it
    assert schema.ChatLoadResult(model="m", gpu={"vendor": "", "architecture": "", "description": "",
                                                 "is_fallback": True, "features": []}, load_s=1.0,
                                 bytes_installed=0, device="cpu", device_reason="", schedule=None)["schedule"] is None


class _Widget:
    def __init__(self):
        self.sent = []

    def on_msg(self, cb):
        self.cb = cb

    def send(self, msg, buffers=None):
        self.sent.append(msg)


def test_channel_records_messages_the_schema_does_not_describe():
    w = _Widget()
    ch = Channel(w)
    w.cb(w, {"v": 1, "kind": "ready", "widget": "chat", "secure": True, "webgpu": True}, [])
    w.cb(w, {"v": 1, "kind": "token", "id": "k1", "text": "Hi"}, [])
    assert ch.wire_problems == []
    w.cb(w, {"v": 1, "kind": "token", "id": "k1", "text": "Hi", "logprob": -1.0}, [])
    ch.send("stop", schema.Stop(target="k1"))
    ch.send("stop", {"target": "k1", "everything": True})
    assert ch.wire_problems == [
        "page sent a 'token' message the wire schema does not describe: Token: unknown field 'logprob'",
        "kernel sent a 'stop' message the wire schema does not describe: Stop: unknown field 'everything'",
    ]
    assert w.sent[-1]["everything"] is True  # still delivered: the check reports, it does not drop


def test_every_kind_has_a_message_and_every_message_a_known_sender():
    for kind in schema.KINDS:
        assert schema.messages_of(kind, "kernel") or schema.messages_of(kind, "page"), kind
    assert {m.SENDER for m in schema.MESSAGES} <= {"kernel", "page", "either"}
