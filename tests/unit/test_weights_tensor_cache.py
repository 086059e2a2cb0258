"""tensor-cache.json + params_shard_N.bin: web-llm's layout, size limits, checksums that catch damage."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from webllm_widget.compile.tensor_cache import read_tensor, verify_tensor_cache, write_tensor_cache
from webllm_widget.errors import BadArtifact


def _records(rng):
    yield "a.weight", rng.standard_normal((64, 48)).astype(np.float32)
    yield "a.q_weight", rng.integers(0, 2**32, (64, 6), dtype=np.uint32)
    yield "b.norm", rng.standard_normal(48).astype(np.float16)
    yield "c.bytes", rng.integers(0, 255, 37, dtype=np.uint8)  # odd size: not a multiple of 4
    for i in range(6):
        yield f"layer{i}.w", rng.standard_normal((32, 32)).astype(np.float32)


def test_round_trip_keeps_every_tensor_and_its_dtype(tmp_path):
    expect = dict(_records(np.random.default_rng(0)))
    doc = write_tensor_cache(tmp_path, _records(np.random.default_rng(0)), shard_bytes=10_000)
    for name, arr in expect.items():
        got = read_tensor(tmp_path, name)
        assert got.dtype == arr.dtype and got.shape == arr.shape
        np.testing.assert_array_equal(got, arr)
    assert doc["metadata"]["ParamSize"] == len(expect)
    assert doc["metadata"]["ParamBytes"] == sum(a.nbytes for a in expect.values())


def test_shards_stay_under_the_limit_and_records_use_web_llm_fields(tmp_path):
    limit = 10_000
    doc = write_tensor_cache(tmp_path, _records(np.random.default_rng(0)), shard_bytes=limit)
    on_disk = json.loads((tmp_path / "tensor-cache.json").read_text())
    assert on_disk == doc
    assert len(doc["records"]) > 1
    for i, shard in enumerate(doc["records"]):
        assert shard["dataPath"] == f"params_shard_{i}.bin"
        assert shard["format"] == "raw-shard"
        data = (tmp_path / shard["dataPath"]).read_bytes()
        assert shard["nbytes"] == len(data)
        assert shard["md5sum"] == hashlib.md5(data).hexdigest()
        assert len(data) <= limit or len(shard["records"]) == 1
        offset = 0
        for rec in shard["records"]:
            assert set(rec) == {"name", "shape", "dtype", "format", "nbytes", "byteOffset"}
            assert rec["format"] == "raw" and rec["byteOffset"] == offset
            offset += rec["nbytes"]
        assert offset == shard["nbytes"]


def test_a_tensor_larger_than_the_limit_gets_a_shard_of_its_own(tmp_path):
    big = np.ones((100, 100), np.float32)  # 40 KB
    doc = write_tensor_cache(tmp_path, [("small", np.zeros(4, np.float32)), ("big", big),
                                        ("after", np.zeros(4, np.float32))], shard_bytes=1000)
    names = [[r["name"] for r in s["records"]] for s in doc["records"]]
    assert names == [["small"], ["big"], ["after"]]


def test_writer_holds_about_one_tensor_in_memory(tmp_path):
    import tracemalloc

    def gen():
        for i in range(40):
            yield f"t{i}", np.full(1 << 18, i, np.float32)  # 1 MiB each, 40 MiB in all

    tracemalloc.start()
    try:
        write_tensor_cache(tmp_path, gen(), shard_bytes=8 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"peak {peak / 2**20:.1f} MiB while writing 40 MiB"
    np.testing.assert_array_equal(read_tensor(tmp_path, "t39"), np.full(1 << 18, 39, np.float32))


def test_verifier_names_the_shard_whose_checksum_does_not_match(tmp_path):
    write_tensor_cache(tmp_path, _records(np.random.default_rng(0)), shard_bytes=10_000)
    verify_tensor_cache(tmp_path)  # intact: passes
    shard = tmp_path / "params_shard_1.bin"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF  # same size, one byte flipped
    shard.write_bytes(bytes(data))
    with pytest.raises(BadArtifact) as e:
        verify_tensor_cache(tmp_path)
    msg = str(e.value)
    assert "params_shard_1.bin" in msg and "checksum" in msg and "rebuild" in msg
    assert e.value.code == "bad-artifact" and e.value.detail["file"] == str(shard)


def test_verifier_reports_a_truncated_or_missing_shard(tmp_path):
    write_tensor_cache(tmp_path, _records(np.random.default_rng(0)), shard_bytes=10_000)
    shard = tmp_path / "params_shard_0.bin"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(BadArtifact, match="params_shard_0.bin.*bytes"):
        verify_tensor_cache(tmp_path)
    shard.unlink()
    with pytest.raises(BadArtifact, match="params_shard_0.bin: shard missing"):
        verify_tensor_cache(tmp_path)


def test_duplicate_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="given twice"):
        write_tensor_cache(tmp_path, [("x", np.zeros(2, np.float32)), ("x", np.zeros(2, np.float32))])
