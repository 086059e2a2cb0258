"""Random parameter shards for a web-llm tensor cache, written where the model runs (the GPU machine).

A 0.5B or 1B model's shards are 300-700 MB of random bytes: nothing compresses them, and the machine that runs
the benchmark is reached by transfers of 64 MiB. So only the shard *layout* travels (``tensor-cache.json`` /
``ndarray-cache.json``: every record's name, shape, dtype and place in its shard) and this script fills the shards
there. Speed does not depend on the values, only on their bytes being read; the values are still chosen so that
the forward pass stays finite: packed integer weights (``uint32``/``uint8``/``int8``...) get uniform random bits,
``float32``/``float16`` records named ``*norm*`` get 1, ``*scale*`` records (group scales of the 4-bit formats)
U(0.002, 0.006) (weights of about N(0, 0.02) after the 4-bit codes), and the rest (biases, unquantized matrices)
N(0, 0.02). Seeded: the same layout and seed give the same bytes on one numpy version.

    python3 random_weights.py FOLDER [--cache tensor-cache.json] [--seed 0]
        # writes FOLDER/<dataPath> for every shard, puts each shard's md5sum into the JSON, prints a JSON
        # {file name: {"sha256", "size"}} of every file in FOLDER

numpy is the only dependency (the GPU machine's Python has it; so does the project's).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

_FLOAT = {"float32": np.float32, "float16": np.float16}
_INT = {"uint32": np.uint32, "int32": np.int32, "uint8": np.uint8, "int8": np.int8, "uint16": np.uint16}


def record_values(rec: dict, rng: np.random.Generator) -> bytes:
    """The bytes of one tensor-cache record (see the module docstring for the values)."""
    name, dtype, n = rec["name"], rec["dtype"], int(np.prod(rec["shape"])) if rec["shape"] else 1
    if dtype in _INT:
        a = rng.integers(0, 2**32, size=(n * np.dtype(_INT[dtype]).itemsize + 3) // 4, dtype=np.uint32)
        b = a.tobytes()[: n * np.dtype(_INT[dtype]).itemsize]
    elif dtype in _FLOAT:
        if "norm" in name:
            v = np.ones(n, np.float32)
        elif "scale" in name:
            v = rng.uniform(0.002, 0.006, n).astype(np.float32)
        else:
            v = rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)
        b = v.astype(_FLOAT[dtype]).tobytes()
    else:
        raise ValueError(f"record {name}: dtype {dtype} is not one this script fills")
    if rec.get("format", "raw") != "raw":
        raise ValueError(f"record {name}: format {rec.get('format')} (only raw records are filled)")
    if len(b) != rec["nbytes"]:
        raise ValueError(f"record {name}: {len(b)} bytes for shape {rec['shape']} {dtype}, the cache says {rec['nbytes']}")
    return b


def fill(folder: Path, cache: str = "tensor-cache.json", seed: int = 0) -> dict:
    """Write every shard of ``folder/cache`` with random records, set each shard's md5sum; return
    {file name: {"sha256", "size"}} of every file in ``folder`` (the JSON rewritten included)."""
    folder = Path(folder)
    doc = json.loads((folder / cache).read_text())
    rng = np.random.default_rng(seed)
    for shard in doc["records"]:
        md5 = hashlib.md5()
        pos = 0
        with open(folder / shard["dataPath"], "wb") as f:
            for rec in sorted(shard["records"], key=lambda r: r["byteOffset"]):
                gap = rec["byteOffset"] - pos
                if gap < 0:
                    raise ValueError(f"{shard['dataPath']}: record {rec['name']} overlaps the one before it")
                b = bytes(gap) + record_values(rec, rng)
                f.write(b)
                md5.update(b)
                pos += len(b)
            tail = bytes(shard["nbytes"] - pos)
            f.write(tail)
            md5.update(tail)
        shard["md5sum"] = md5.hexdigest()
    (folder / cache).write_text(json.dumps(doc, indent=1))
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file():
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for blk in iter(lambda: f.read(1 << 22), b""):
                    h.update(blk)
            out[p.name] = {"sha256": h.hexdigest(), "size": p.stat().st_size}
    return out


def layout_from_metadata(params: list[dict], shard_bytes: int = 32 * 2**20) -> dict:
    """A tensor-cache JSON for a model library's ``_metadata`` params (name, shape, dtype, in the order the
    library takes them): raw records packed into shards of at most ``shard_bytes`` (a larger tensor gets its own)."""
    shards: list[dict] = []
    cur: dict | None = None
    total = 0
    for p in params:
        n = int(np.prod(p["shape"])) if p["shape"] else 1
        nb = n * np.dtype(_FLOAT.get(p["dtype"]) or _INT[p["dtype"]]).itemsize
        if cur is None or (cur["nbytes"] and cur["nbytes"] + nb > shard_bytes):
            cur = {"dataPath": f"params_shard_{len(shards)}.bin", "format": "raw-shard", "nbytes": 0, "records": []}
            shards.append(cur)
        cur["records"].append({"name": p["name"], "shape": list(p["shape"]), "dtype": p["dtype"], "format": "raw",
                               "nbytes": nb, "byteOffset": cur["nbytes"]})
        cur["nbytes"] += nb
        total += nb
    return {"metadata": {"ParamSize": len(params), "ParamBytes": total}, "records": shards}


def wasm_metadata(wasm: bytes) -> dict:
    """The ``_metadata`` JSON an MLC model library embeds (model type, quantization, context and prefill sizes,
    KV cache shape, and ``params``): the string constant that starts with ``{"model_type"``."""
    i = wasm.find(b'{"model_type"')
    if i < 0:
        raise ValueError("no _metadata JSON ({\"model_type\"...) in this wasm")
    meta, _ = json.JSONDecoder().raw_decode(wasm[i:i + 4 * 2**20].decode("latin-1"))
    if not isinstance(meta.get("params"), list):
        raise ValueError("the wasm's _metadata has no params list")
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--cache", default="tensor-cache.json")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print(json.dumps(fill(a.folder, a.cache, a.seed), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
