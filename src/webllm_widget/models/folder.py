"""A model folder as the page's engine sees it: every file named by its sha256, checked before anything travels.

    fm = folder_model(path)      # fm.spec for the page's engine; fm.paths: sha256 -> file
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..cache import sha256_file
from ..errors import BadArtifact, BadModel
from ..wire.schema import BlobRef, ModelSpec

#: A CPU model folder's relaxed-SIMD library, beside its model.wasm (compile/cpu.py LIBRARY_FILES).
RELAXED_SIMD_LIBRARY = "model-relaxed-simd.wasm"

_HASHES: dict[tuple[str, int, int], str] = {}


def _file_sha(p: Path) -> str:
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(p)
    return _HASHES[key]


@dataclass
class FolderModel:
    """A model folder in web-llm's layout, described by content: what the page's engine loads."""

    folder: Path
    spec: ModelSpec
    paths: dict[str, Path] = field(repr=False)  # sha256 -> file

    @property
    def total_bytes(self) -> int:
        return sum(f["size"] for f in self.spec["files"])


def folder_model(folder: str | os.PathLike, model_id: str | None = None) -> FolderModel:
    """Describe a model folder (mlc-chat-config.json, tokenizer, tensor-cache.json, shards, one .wasm) by hashes.

    The spec's ``key`` hashes the whole manifest, so a rebuilt folder gets new URLs in the page's cache.
    """
    folder = Path(folder)
    if not (folder / "mlc-chat-config.json").exists():
        raise BadModel(f"{folder} is not a model folder: mlc-chat-config.json is missing")
    # A CPU folder also holds its relaxed-SIMD build (the page picks it where WebAssembly has relaxed SIMD).
    relaxed = RELAXED_SIMD_LIBRARY
    libs = sorted(p for p in folder.glob("*.wasm") if p.name != relaxed)
    if len(libs) != 1:
        raise BadModel(f"{folder} must hold exactly one model library (.wasm), found {len(libs)}")
    # A folder built by compile.pipeline lists every file's sha256 in manifest.json: no need to re-read them.
    manifest = {}
    if (folder / "manifest.json").exists():
        try:
            manifest = json.loads((folder / "manifest.json").read_text()).get("files", {})
        except (ValueError, OSError):
            manifest = {}
    _check_folder_files(folder, manifest)
    files, paths = [], {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith(".") or p.name == "manifest.json":
            continue
        size = p.stat().st_size
        known = manifest.get(p.name) or {}
        sha = known.get("sha256") if known.get("size") == size else None
        sha = sha or _file_sha(p)
        files.append(BlobRef(name=p.name, sha256=sha, size=size))
        paths[sha] = p
    key = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:32]
    spec = ModelSpec(id=model_id or folder.name, files=files, key=key, lib=libs[0].name,
                     **({"lib_relaxed_simd": relaxed} if (folder / relaxed).is_file() else {}))
    return FolderModel(folder, spec, paths)


def _check_folder_files(folder: Path, manifest: dict) -> None:
    """Name a missing or truncated file before anything is sent to the page (web-llm would only say
    "Request failed" for a URL it cannot find, and fail later on a short shard)."""
    # Files the folder's own configs name must be there.
    needed: dict[str, int | None] = {}
    try:
        cfg = json.loads((folder / "mlc-chat-config.json").read_text())
    except (ValueError, OSError) as e:
        raise BadArtifact(f"{folder / 'mlc-chat-config.json'} is not valid JSON ({e}): rebuild the model folder",
                          detail={"file": "mlc-chat-config.json"}) from None
    for name in cfg.get("tokenizer_files") or []:
        needed.setdefault(str(name), None)
    cache_json = next((n for n in ("tensor-cache.json", "ndarray-cache.json") if (folder / n).exists()), None)
    if cache_json is None:
        raise BadModel(f"{folder} is not a complete model folder: tensor-cache.json is missing; rebuild it",
                       detail={"file": "tensor-cache.json"})
    try:
        records = json.loads((folder / cache_json).read_text()).get("records") or []
    except (ValueError, OSError) as e:
        raise BadArtifact(f"{folder / cache_json} is not valid JSON ({e}): rebuild the model folder",
                          detail={"file": cache_json}) from None
    for r in records:
        if r.get("dataPath"):
            needed[str(r["dataPath"])] = r.get("nbytes")
    for name, entry in manifest.items():
        needed.setdefault(name, None)
    for name, nbytes in needed.items():
        f = folder / name
        if not f.is_file():
            raise BadModel(f"{folder} is missing {name} (named by the folder's configs or manifest): "
                           "rebuild the model folder", detail={"file": name})
        size = f.stat().st_size
        expect = (manifest.get(name) or {}).get("size", nbytes)
        if expect is not None and size != int(expect):
            raise BadArtifact(f"{name} in {folder} has {size} bytes, the folder says {int(expect)}: the file is "
                              "truncated or was replaced; rebuild the model folder", detail={"file": name})
