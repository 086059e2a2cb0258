"""Write and verify a model's parameters as web-llm's ``tensor-cache.json`` + ``params_shard_N.bin``.

Format (what web-llm 0.2.85 / tvmjs 0.27 ``fetchTensorCache`` reads)::

    {"metadata": {"ParamSize": 272, "ParamBytes": 103_000_000, "BitsPerParam": 4.6},
     "records": [                                   # one entry per shard file
        {"dataPath": "params_shard_0.bin", "format": "raw-shard", "nbytes": 33_000_000, "md5sum": "…",
         "records": [{"name": "…", "shape": [576], "dtype": "float32", "format": "raw",
                      "nbytes": 2304, "byteOffset": 0}, …]}, …]}

Tensors are appended in the order given and a shard is closed when the next tensor would push it
past ``shard_bytes`` (one tensor larger than that gets a shard of its own). Each shard is written
while its bytes stream in, so peak memory is about one tensor. ``verify_tensor_cache`` checks every
shard's size and md5 and raises :class:`~webllm_widget.errors.BadArtifact` naming the bad file.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import BadArtifact

__all__ = ["write_tensor_cache", "verify_tensor_cache", "SHARD_BYTES", "TENSOR_CACHE_JSON"]

SHARD_BYTES = 32 * 1024 * 1024
TENSOR_CACHE_JSON = "tensor-cache.json"

_DTYPES = {
    np.dtype("float32"): "float32", np.dtype("float16"): "float16", np.dtype("uint32"): "uint32",
    np.dtype("int32"): "int32", np.dtype("uint8"): "uint8", np.dtype("int8"): "int8",
    np.dtype("uint16"): "uint16", np.dtype("int64"): "int64", np.dtype("float64"): "float64",
}


class _Shard:
    def __init__(self, folder: Path, index: int):
        self.path = folder / f"params_shard_{index}.bin"
        self.f = open(self.path, "wb")
        self.md5 = hashlib.md5()
        self.nbytes = 0
        self.records: list[dict] = []

    def add(self, name: str, arr: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(arr)).cast("B")
        self.records.append({
            "name": name, "shape": [int(s) for s in arr.shape], "dtype": _DTYPES[arr.dtype],
            "format": "raw", "nbytes": int(data.nbytes), "byteOffset": self.nbytes,
        })
        self.f.write(data)
        self.md5.update(data)
        self.nbytes += data.nbytes

    def close(self) -> dict:
        self.f.close()
        return {"dataPath": self.path.name, "format": "raw-shard", "nbytes": self.nbytes,
                "records": self.records, "md5sum": self.md5.hexdigest()}


def write_tensor_cache(folder: str | os.PathLike, records: Iterable[tuple[str, np.ndarray]], *,
                       shard_bytes: int = SHARD_BYTES, progress=None) -> dict:
    """Write ``(name, array)`` pairs into ``folder`` as shards + ``tensor-cache.json``; return the JSON dict.

    ``records`` may be a generator: arrays are written as they arrive and not kept.
    ``progress`` (optional) is called with the number of bytes written for each tensor.
    Arrays keep their dtype (float32, float16, uint32, uint8, int8, …); data is little-endian.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[dict] = []
    cur: _Shard | None = None
    n_params = 0
    n_bytes = 0
    seen: set[str] = set()
    for name, arr in records:
        arr = np.asarray(arr)
        if arr.dtype not in _DTYPES:
            raise TypeError(f"tensor {name}: dtype {arr.dtype} cannot be stored in a tensor cache")
        if name in seen:
            raise ValueError(f"tensor {name} given twice")
        seen.add(name)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        if cur is not None and cur.nbytes > 0 and cur.nbytes + arr.nbytes > shard_bytes:
            shards.append(cur.close())
            cur = None
        if cur is None:
            cur = _Shard(folder, len(shards))
        cur.add(name, arr)
        n_params += 1
        n_bytes += arr.nbytes
        if progress is not None:
            progress(arr.nbytes)
    if cur is not None:
        shards.append(cur.close())
    meta = {"ParamSize": n_params, "ParamBytes": n_bytes}
    doc = {"metadata": meta, "records": shards}
    (folder / TENSOR_CACHE_JSON).write_text(json.dumps(doc, indent=1))
    return doc


def verify_tensor_cache(folder: str | os.PathLike) -> dict:
    """Check every shard named in ``tensor-cache.json`` exists with the recorded size and md5.

    Returns the parsed JSON. Raises :class:`BadArtifact` naming the first bad file and what to do.
    """
    folder = Path(folder)
    index = folder / TENSOR_CACHE_JSON
    fix = "Delete the model folder (or run `webllm-widget build` again with a fresh --out) to rebuild it."
    try:
        doc = json.loads(index.read_text())
        shards = doc["records"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BadArtifact(f"{index}: missing or unreadable ({e}). {fix}", detail={"file": str(index)}) from e
    for shard in shards:
        path = folder / shard["dataPath"]
        if not path.exists():
            raise BadArtifact(f"{path}: shard missing. {fix}", detail={"file": str(path)})
        size = path.stat().st_size
        if size != shard["nbytes"]:
            raise BadArtifact(f"{path}: shard has {size} bytes, tensor-cache.json says {shard['nbytes']} "
                              f"(truncated or replaced). {fix}", detail={"file": str(path)})
        h = hashlib.md5()
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
        if h.hexdigest() != shard["md5sum"]:
            raise BadArtifact(f"{path}: checksum mismatch (md5 {h.hexdigest()}, expected {shard['md5sum']}); "
                              f"the file is corrupt. {fix}", detail={"file": str(path)})
    return doc


def read_tensor(folder: str | os.PathLike, name: str) -> np.ndarray:
    """Read one tensor back from a tensor cache (tests and debugging)."""
    folder = Path(folder)
    doc = json.loads((folder / TENSOR_CACHE_JSON).read_text())
    for shard in doc["records"]:
        for rec in shard["records"]:
            if rec["name"] == name:
                with open(folder / shard["dataPath"], "rb") as f:
                    f.seek(rec["byteOffset"])
                    buf = f.read(rec["nbytes"])
                return np.frombuffer(buf, dtype=np.dtype(rec["dtype"])).reshape(rec["shape"])
    raise KeyError(name)
