"""bench/gpu_device.py's local pieces: the bandwidth bound it writes beside the GPU run, its profile summary, and
that `make bench` passes over it on a machine without an NVIDIA GPU. (The GPU run itself needs a GPU machine.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_device  # noqa: E402


def _raw(tmp_path: Path, copy_gbps: float, params: int, kv: int, prompts: dict) -> Path:
    raw = {
        "manifest": {"node_version": "v20", "jobs": {"model": {"job": {"spec": {"id": "m"}},
                                                             "weights": {"params_bytes": params,
                                                                         "kv_bytes_per_position": kv}}}},
        "nvidia_smi": {"name": "NVIDIA H200"},
        "torch": {"name": "NVIDIA H200", "copy": {"GBps_median": copy_gbps}},
        "jobs": {"model": {"rc": 0, "result": {"load": {"schedule": "auto"}, "prompts": prompts}}},
    }
    p = tmp_path / "raw" / "gpu_raw.json"
    p.parent.mkdir()
    p.write_text(json.dumps(raw))
    return p


def test_collect_puts_decode_beside_the_bandwidth_bound(tmp_path):
    prompts = {"32": {"prompt_tokens": 32, "completion_tokens": 64, "decode_tok_s": {"median": 50.0},
                      "prefill_tok_s": {"median": 900.0}, "cpu_s": {"median": 3.0}, "wall_s": {"median": 2.0}},
               "512": {"prompt_tokens": 512, "completion_tokens": 64, "decode_tok_s": {"median": 40.0},
                       "prefill_tok_s": {"median": 1300.0}, "cpu_s": {"median": 1.0}, "wall_s": {"median": 4.0}}}
    params, kv, gbps = 100_000_000, 40_000, 4000.0
    path = gpu_device.collect(_raw(tmp_path, gbps, params, kv, prompts), tmp_path / "out")
    res = json.loads(path.read_text())
    assert res["summary"]["gpu"] == "NVIDIA H200"
    assert res["summary"]["datasheet_GBps"] == gpu_device.DATASHEET_GBPS["H200"]
    for n, p in prompts.items():
        b = res["runs"]["model"]["bound"][n]
        ctx = p["prompt_tokens"] + p["completion_tokens"] / 2  # mean context while decoding
        assert b["bytes_per_token"] == round(params + kv * ctx)
        assert b["bound_tok_s"] == pytest.approx(gbps * 1e9 / (params + kv * ctx), rel=1e-3)
        assert b["fraction_of_bound"] == pytest.approx(p["decode_tok_s"]["median"] / b["bound_tok_s"], rel=1e-3)
        s = res["summary"]["per_prompt"][n]
        assert s["host_cpu_per_wall"] == pytest.approx(p["cpu_s"]["median"] / p["wall_s"]["median"], abs=0.01)
        assert s["prefill_tok_s"] == p["prefill_tok_s"]["median"]
    # a longer context reads more KV cache per token: a lower bound
    assert res["runs"]["model"]["bound"]["512"]["bound_tok_s"] < res["runs"]["model"]["bound"]["32"]["bound_tok_s"]



def _chrome_raw(tmp_path: Path, name: str, decode: dict, variants: dict | None = None) -> Path:
    def prompts(dec):
        return {n: {"prompt_tokens": 32, "completion_tokens": 100, "decode_tok_s": {"median": d, "min": d, "max": d},
                    "prefill_tok_s": {"median": 800.0, "min": 800.0, "max": 800.0}, "wall_s": {"median": 2.0},
                    "cpu_s": {"median": 1.0},
                    "cpu_s_by_type": {"renderer": {"median": 0.6}, "gpu-process": {"median": 0.4}},
                    "dispatches": 31_000} for n, d in dec.items()}
    raw = {"when": name, "chromium": "Chromium 156", "flag_set": "vulkan-no-compositing",
           "result": {"adapter_info": {"vendor": "nvidia", "is_fallback": False}, "prompts": prompts(decode)},
           "variants": {k: {"flags": ["--x"], "prompts": prompts(v)} for k, v in (variants or {}).items()}}
    p = tmp_path / f"{name}.json"
    p.write_text(json.dumps(raw))
    return p


def test_collect_puts_chromes_decode_beside_nodes_with_repeats_and_variant_speedups(tmp_path):
    node = {"32": {"prompt_tokens": 32, "completion_tokens": 100, "decode_tok_s": {"median": 40.0},
                   "prefill_tok_s": {"median": 900.0}, "cpu_s": {"median": 2.0}, "wall_s": {"median": 2.0}}}
    first = _chrome_raw(tmp_path, "a", {"32": 50.0})
    again = _chrome_raw(tmp_path, "b", {"32": 48.0}, {"nochecks": {"32": 60.0}})
    path = gpu_device.collect(_raw(tmp_path, 4000.0, 100_000_000, 40_000, node), tmp_path / "out", [first, again])
    res = json.loads(path.read_text())
    c = res["summary"]["chrome"]["per_prompt"]["32"]
    assert c["decode_tok_s"] == 50.0 and c["chrome_over_node_decode"] == pytest.approx(50.0 / 40.0)
    assert c["cpu_per_wall_by_type"] == {"renderer": 0.3, "gpu-process": 0.2}
    assert c["us_per_dispatch"] == pytest.approx(1e6 / 50.0 / 310.0, abs=0.1)
    assert c["fraction_of_bound"] == pytest.approx(50.0 / c["bound_tok_s"], rel=1e-3)
    assert res["chrome"]["repeats"] == [{"32": {"decode_tok_s": 48.0, "prefill_tok_s": 800.0}}]
    (v,) = res["chrome"]["variants"]
    assert v["name"] == "nochecks" and v["speedup"]["32"] == pytest.approx(60.0 / 48.0)  # against its own call's run

def test_kernel_summary_takes_decode_steps_per_run_and_collect_puts_gpu_busy_beside_wall(tmp_path):
    """chrome_run.kernel_summary: steps fall in a run by their end time, the first of each run is the prefill;
    collect carries the per-step GPU busy / wall and the top kernels into gpu.json's chrome summary."""
    sys.path.insert(0, str(ROOT / "bench" / "gpu"))
    import chrome_run

    def step(t, wall, busy_ns, kern):
        return {"epoch_ms": t * 1e3, "wall_ms": wall, "encode_ms": 1.0, "dispatches": 3, "submits": 1,
                "timed_passes": 3, "gpu_busy_ms": busy_ns / 1e6, "gpu_span_ms": busy_ns / 1e6 + 0.5, "kernels": kern}
    pre = {"matmul_pre": [9_000_000, 3]}
    dec = {"matmul": [1_500_000, 2], "norm": [500_000, 1]}
    segs = [step(5.0, 9.0, 9e6, pre)]  # outside every window (an earlier run)
    for a in (10.0, 20.0):
        segs += [step(a + 0.1, 50.0, 9e6, pre), step(a + 0.2, 20.0, 2e6, dec), step(a + 0.3, 20.0, 2e6, dec)]
    k = chrome_run.kernel_summary(segs, {"32": {"windows": [[10.0, 11.0], [20.0, 21.0]]}}, {"timestamps": True}, {})
    q = k["per_prompt"]["32"]
    assert q["steps_per_run"] == [3, 3] and q["decode_steps"] == 4
    assert q["decode"]["gpu_busy_ms"]["mean"] == pytest.approx(2.0) and q["gpu_busy_share_of_wall"] == pytest.approx(0.1)
    assert q["prefill"]["gpu_busy_ms"]["mean"] == pytest.approx(9.0)
    assert [t["kernel"] for t in q["top_kernels"]] == ["matmul", "norm"]
    assert q["top_kernels"][0]["share_of_gpu"] == pytest.approx(0.75) and q["top_kernels"][0]["us_per_call"] == 750.0

    node = {"32": {"prompt_tokens": 32, "completion_tokens": 100, "decode_tok_s": {"median": 40.0},
                   "prefill_tok_s": {"median": 900.0}, "cpu_s": {"median": 2.0}, "wall_s": {"median": 2.0}}}
    first = _chrome_raw(tmp_path, "a", {"32": 50.0})
    withk = json.loads(first.read_text())
    withk["kernels"] = k
    first.write_text(json.dumps(withk))
    res = json.loads(gpu_device.collect(_raw(tmp_path, 4000.0, 100_000_000, 40_000, node), tmp_path / "out",
                                        [first]).read_text())
    s = res["summary"]["chrome"]["kernels"]["per_prompt"]["32"]
    assert s["step_wall_ms"] == pytest.approx(20.0) and s["gpu_busy_ms"] == pytest.approx(2.0)
    assert s["top_kernels"][0]["kernel"] == "matmul" and res["chrome"]["kernels"]["per_prompt"]["32"]["decode_steps"] == 4


def test_profile_summary_gives_self_time_by_function(tmp_path):
    prof = {"nodes": [{"id": 1, "callFrame": {"functionName": "(root)", "url": "", "lineNumber": -1}},
                      {"id": 2, "callFrame": {"functionName": "(idle)", "url": "", "lineNumber": -1}},
                      {"id": 3, "callFrame": {"functionName": "dispatch", "url": "file:///x/engine.cjs", "lineNumber": 7}}],
            "samples": [2, 3, 3, 3, 2], "timeDeltas": [100, 300, 300, 200, 100]}
    p = tmp_path / "a.cpuprofile"
    p.write_text(json.dumps(prof))
    s = gpu_device.profile_summary(p)
    assert s["total_s"] == pytest.approx(1000 / 1e6)
    assert s["idle_share"] == pytest.approx(0.2)
    assert s["top"][0] == {"fn": "dispatch engine.cjs:7", "share": 0.8, "s": 0.001}


@pytest.mark.skipif(gpu_device.has_gpu(), reason="this machine has an NVIDIA GPU: make bench runs the GPU benchmark")
def test_gpu_benchmark_is_skipped_without_a_gpu():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_device.py"), "run", "--if-gpu"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "no NVIDIA GPU" in r.stdout
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_device.py"), "run"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1


def test_collect_browser_only_puts_batched_dispatch_beside_upstream_and_the_new_library_beside_the_earlier(tmp_path):
    """A probe-only gpu_raw.json (no Node run), a Chromium run with its upstream-dispatch variant, and the baseline
    job's run (another library, same call): the summary compares each within its own call."""
    from plot import gpu_summary

    raw = json.loads(_raw(tmp_path, 4000.0, 100_000_000, 40_000, {}).read_text())
    raw["jobs"] = {}
    raw["manifest"]["jobs"]["baseline"] = {"job": {"spec": {"id": "m-baseline", "lib": "model.wasm", "files": [
        {"name": "model.wasm", "sha256": "ab" * 32}]}}, "shares": "model"}
    (tmp_path / "raw" / "gpu_raw.json").write_text(json.dumps(raw))
    new = _chrome_raw(tmp_path, "new", {"32": 90.0}, {"upstream-dispatch": {"32": 60.0}})
    old = _chrome_raw(tmp_path, "old", {"32": 80.0})
    c = json.loads(old.read_text())
    c["result"]["prompts"]["32"]["prefill_tok_s"] = {"median": 400.0, "min": 400.0, "max": 400.0}
    old.write_text(json.dumps(c))
    path = gpu_device.collect(tmp_path / "raw" / "gpu_raw.json", tmp_path / "out", [new], old)
    res = json.loads(path.read_text())
    d = res["summary"]["chrome"]["dispatch"]["per_prompt"]["32"]
    assert d == {"batched_decode_tok_s": 90.0, "upstream_decode_tok_s": 60.0, "batched_over_upstream": 1.5}
    vs = res["summary"]["chrome_vs_baseline_library"]["32"]
    assert vs["prefill_new_over_baseline"] == pytest.approx(800.0 / 400.0)
    assert vs["decode_new_over_baseline"] == pytest.approx(90.0 / 80.0)
    assert res["chrome_baseline"]["library_sha256"] == "ab" * 32
    assert res["chrome"]["per_prompt"]["32"]["bound_tok_s"]  # weights from the manifest without a Node run
    text = "\n".join(gpu_summary(res))
    assert "90.0 vs 60.0 (x1.50)" in text and "prefill x2.00, decode x1.12" in text
    # another library of the model in the same call (prepare --lib-variant NAME=FILE: job model-NAME)
    raw["manifest"]["jobs"]["model-wide"] = {"job": {"spec": {"id": "m-wide", "lib": "model.wasm", "files": [
        {"name": "model.wasm", "sha256": "cd" * 32}]}}, "shares": "model"}
    (tmp_path / "raw" / "gpu_raw.json").write_text(json.dumps(raw))
    var = tmp_path / "chrome_raw_model-wide.json"
    var.write_text(_chrome_raw(tmp_path, "var", {"32": 108.0}).read_text())
    res = json.loads(gpu_device.collect(tmp_path / "raw" / "gpu_raw.json", tmp_path / "out", [new], old, [var]).read_text())
    v = res["chrome_lib_variants"]["wide"]
    assert v["library_sha256"] == "cd" * 32 and v["per_prompt"]["32"]["decode_tok_s"] == 108.0
    assert v["decode_variant_over_model"]["32"] == pytest.approx(108.0 / 90.0)


# -- real model shapes with weights written on the GPU machine, and MLC's prebuilt library beside them --------------

def _cache_doc(records: list[tuple[str, list[int], str]], shard_bytes: int = 64) -> dict:
    sys.path.insert(0, str(ROOT / "bench" / "gpu"))
    import random_weights

    return random_weights.layout_from_metadata([{"name": n, "shape": s, "dtype": d} for n, s, d in records], shard_bytes)


def test_random_weights_fill_every_record_in_its_place_and_set_md5(tmp_path):
    """random_weights.fill writes each shard at the size the layout says, records at their byte offsets (norms 1,
    group scales in (0.002, 0.006), packed words random), and each shard's md5 into the JSON."""
    import hashlib

    import numpy as np
    sys.path.insert(0, str(ROOT / "bench" / "gpu"))
    import random_weights

    doc = _cache_doc([("a.q_weight", [4, 3], "uint32"), ("a.q_scale", [4, 1], "float32"),
                      ("l.input_layernorm.weight", [8], "float32"), ("a.bias", [5], "float32"), ("e.w", [70], "uint8")])
    # a shard closes before it would pass 64 bytes; a larger tensor gets one of its own
    assert [len(s["records"]) for s in doc["records"]] == [2, 2, 1]
    assert doc["metadata"] == {"ParamSize": 5, "ParamBytes": 48 + 16 + 32 + 20 + 70}
    (tmp_path / "tensor-cache.json").write_text(json.dumps(doc))
    (tmp_path / "mlc-chat-config.json").write_text("{}")
    out = random_weights.fill(tmp_path, "tensor-cache.json", seed=3)
    after = json.loads((tmp_path / "tensor-cache.json").read_text())
    for shard in after["records"]:
        data = (tmp_path / shard["dataPath"]).read_bytes()
        assert len(data) == shard["nbytes"] and hashlib.md5(data).hexdigest() == shard["md5sum"]
        for r in shard["records"]:
            b = data[r["byteOffset"]:r["byteOffset"] + r["nbytes"]]
            if "norm" in r["name"]:
                assert np.all(np.frombuffer(b, np.float32) == 1.0)
            elif "scale" in r["name"]:
                v = np.frombuffer(b, np.float32)
                assert np.all((v > 0.002) & (v < 0.006))
            elif r["dtype"] == "uint32":
                assert len(set(np.frombuffer(b, np.uint32).tolist())) > 1
    assert set(out) == {"tensor-cache.json", "mlc-chat-config.json", *(f"params_shard_{i}.bin" for i in range(3))}
    assert out["params_shard_1.bin"]["sha256"] == hashlib.sha256((tmp_path / "params_shard_1.bin").read_bytes()).hexdigest()
    bad = _cache_doc([("x", [3], "float32")])
    bad["records"][0]["records"][0]["nbytes"] = 16
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="the cache says 16"):
        random_weights.fill(tmp_path, "bad.json")


def test_wasm_metadata_reads_the_params_list_an_mlc_library_embeds():
    sys.path.insert(0, str(ROOT / "bench" / "gpu"))
    import random_weights

    meta = {"model_type": "qwen2", "quantization": "q4f32_1", "context_window_size": 4096, "prefill_chunk_size": 1024,
            "params": [{"name": "model.embed_tokens.q_weight", "shape": [151936, 112], "dtype": "uint32", "preprocs": []}]}
    blob = b"\0asm\x01\0\0\0" + b"\x07junk" + json.dumps(meta).encode() + b"\0\x03more"
    assert random_weights.wasm_metadata(blob) == meta
    with pytest.raises(ValueError, match="no _metadata"):
        random_weights.wasm_metadata(b"\0asm\x01\0\0\0")


def test_generated_weights_share_shards_between_jobs_of_one_layout_and_fix_the_specs(tmp_path):
    """device_run.generated_weights: the project job's shards are written once; the official job (same records,
    other names) links the same files; both specs then name the shards by their new sha256."""
    import hashlib
    import tarfile
    sys.path.insert(0, str(ROOT / "bench" / "gpu"))
    import device_run

    st = tmp_path / "stage"
    st.mkdir()
    doc = _cache_doc([("p.qkv_proj.q_weight", [8, 2], "uint32"), ("p.norm.weight", [4], "float32")], 1 << 20)
    odoc = json.loads(json.dumps(doc))
    odoc["records"][0]["records"][0]["name"] = "p.c_attn.q_weight"
    manifest = {"jobs": {}}
    for name, d, cache in (("shape", doc, "tensor-cache.json"), ("official", odoc, "ndarray-cache.json")):
        src = tmp_path / f"src-{name}"
        src.mkdir()
        (src / cache).write_text(json.dumps(d))
        sha = hashlib.sha256((src / cache).read_bytes()).hexdigest()
        with tarfile.open(st / f"{name}.tar.000", "w") as tf:
            tf.add(src / cache, arcname=sha)
        tsha = hashlib.sha256((st / f"{name}.tar.000").read_bytes()).hexdigest()
        if name == "shape":  # prepare --xz-jobs: the pieces are of the compressed tar, the sha256 of the tar
            gpu_device.xz(st / f"{name}.tar.000", st / "piece")
            os.replace(st / "piece", st / f"{name}.tar.000")
        files = [{"name": cache, "sha256": sha, "size": (src / cache).stat().st_size},
                 {"name": "params_shard_0.bin", "sha256": "", "size": d["records"][0]["nbytes"]}]
        manifest["jobs"][name] = {"job": {"spec": {"id": name, "files": files}}, "parts": [f"{name}.tar.000"],
                                  "tar_sha256": tsha, "generate": {"cache": cache, "seed": 0,
                                                                   **({"same_as": "shape"} if name == "official" else {})},
                                  **({"tar_xz": True} if name == "shape" else {})}
    (st / "manifest.json").write_text(json.dumps(manifest))
    official = manifest["jobs"]["official"]
    files = device_run.model_files(st, "official", official)
    shape = json.loads(json.dumps(manifest["jobs"]["shape"]))
    device_run.model_files(st, "shape", shape)
    shard = {f["name"]: f for f in official["job"]["spec"]["files"]}["params_shard_0.bin"]
    assert shard["sha256"] == {f["name"]: f for f in shape["job"]["spec"]["files"]}["params_shard_0.bin"]["sha256"]
    data = (files / shard["sha256"]).read_bytes()
    assert len(data) == shard["size"] == 64 + 16 and hashlib.sha256(data).hexdigest() == shard["sha256"]
    assert os.path.samefile(st / "named-official" / "params_shard_0.bin", st / "named-shape" / "params_shard_0.bin")
    cache = {f["name"]: f for f in official["job"]["spec"]["files"]}["ndarray-cache.json"]
    got = json.loads((files / cache["sha256"]).read_bytes())
    assert got["records"][0]["records"][0]["name"] == "p.c_attn.q_weight"
    assert got["records"][0]["md5sum"] == hashlib.md5(data).hexdigest()
    again = json.loads(json.dumps(manifest["jobs"]["official"]))  # a later process of the same run: same answer
    device_run.model_files(st, "official", again)
    assert again["job"]["spec"] == official["job"]["spec"]


def test_a_model_job_staged_without_shards_keeps_its_layout_and_asks_for_random_ones():
    """prepare --generate-weights: the built-in model's job travels without its parameter shards (random ones of the
    same layout are written on the GPU machine, as for the shapes); its tensor cache and library still travel."""
    files = [{"name": "model.wasm", "sha256": "a"}, {"name": "tensor-cache.json", "sha256": "b"},
             {"name": "params_shard_0.bin", "sha256": "c"}, {"name": "params_shard_1.bin", "sha256": "d"}]
    job, paths = gpu_device.without_shards({"spec": {"files": files}}, {k: Path(k) for k in "abcd"})
    assert sorted(paths) == ["a", "b"] and job["generate"] == {"cache": "tensor-cache.json", "seed": 0}
    assert job["spec"]["files"] == files  # the engine's spec still lists the shards (their sha256 set on the GPU)


def _shape_chrome(tmp_path: Path, name: str, decode: dict, prefill: dict, dispatches: int, text: str) -> Path:
    prompts = {n: {"prompt_tokens": int(n), "completion_tokens": 64, "decode_tok_s": {"median": d, "runs": [d]},
                   "prefill_tok_s": {"median": prefill[n]}, "wall_s": {"median": 1.0}, "cpu_s": {"median": 0.5},
                   "dispatches": dispatches, "submits": dispatches // 8, "text_head": text} for n, d in decode.items()}
    raw = {"when": "t", "chromium": "Chromium 156", "flag_set": "vulkan-no-compositing",
           "result": {"adapter_info": {"vendor": "nvidia", "is_fallback": False}, "load": {"schedule": "auto"},
                      "prompts": prompts}}
    p = tmp_path / f"chrome_raw_{name}.json"
    p.write_text(json.dumps(raw))
    return p


def test_collect_shapes_puts_project_over_official_and_the_share_of_the_bound_into_gpu_json(tmp_path):
    """collect-shapes: per prompt ratio = project decode / official decode of the same call, prefill likewise;
    each shape's decode beside the bound from the measured copy bandwidth (share_of_bound); the built-in model's
    results already in gpu.json stay, and a later `collect` of the built-in model keeps these keys."""
    params, kv, gbps = 300_000_000, 12_288, 3000.0
    raw = json.loads(_raw(tmp_path, gbps, 1, 1, {}).read_text())
    raw["jobs"] = {}
    w = {"params_bytes": params, "kv_bytes_per_position": kv}
    raw["manifest"]["jobs"] = {
        "qwen2-0.5b": {"job": {"spec": {"id": "q", "lib": "model.wasm", "files": [{"name": "model.wasm", "sha256": "cd" * 32}]},
                               "shape": {"hf_config": {"hidden_size": 896}}, "max_tokens": 64}, "weights": w},
        "official": {"job": {"spec": {"id": "o"}, "official": {"web_llm": "0.2.79", "path": "x.wasm",
                                                               "same_layout_as_project": True}}, "weights": w}}
    (tmp_path / "raw" / "gpu_raw.json").write_text(json.dumps(raw))
    out = tmp_path / "out"
    out.mkdir()
    (out / "gpu.json").write_text(json.dumps({"summary": {"model": "smol", "chrome": {"x": 1}}, "chrome": {"y": 2}}))
    proj = _shape_chrome(tmp_path, "qwen2-0.5b", {"32": 300.0, "128": 280.0}, {"32": 2000.0, "128": 6000.0}, 64 * 100, "ab")
    off = _shape_chrome(tmp_path, "official", {"32": 100.0, "128": 140.0}, {"32": 1000.0, "128": 1500.0}, 64 * 400, "ab")
    assert gpu_device.job_of(proj) == "qwen2-0.5b"
    res = json.loads(gpu_device.collect_shapes(tmp_path / "raw" / "gpu_raw.json", {"qwen2-0.5b": proj, "official": off},
                                               out).read_text())
    assert res["chrome"] == {"y": 2} and res["summary"]["chrome"] == {"x": 1}
    o = res["official"]["per_prompt"]
    assert o["32"]["ratio"] == pytest.approx(3.0) and o["128"]["ratio"] == pytest.approx(2.0)
    assert o["32"]["prefill_ratio"] == pytest.approx(2.0) and o["128"]["prefill_ratio"] == pytest.approx(4.0)
    assert o["32"]["project_dispatches_per_token"] == 100 and o["32"]["official_dispatches_per_token"] == 400
    assert o["32"]["same_text"] is True and res["official"]["same_weight_bytes"] is True
    assert o["32"]["submits_per_token"] == {"project": 12.5, "official": 50.0}
    assert o["32"]["host_cpu_per_wall"] == {"project": 0.5, "official": 0.5}
    assert res["official"]["ratio_median"] == pytest.approx(2.5)
    assert res["summary"]["official"]["per_prompt"]["128"]["ratio"] == pytest.approx(2.0)
    b = res["shapes"]["qwen2-0.5b"]["per_prompt"]["32"]
    bound = gbps * 1e9 / (params + kv * (32 + 64 / 2))
    assert b["bound_tok_s"] == pytest.approx(bound, rel=1e-3) and b["share_of_bound"] == pytest.approx(300.0 / bound, rel=1e-3)
    assert res["summary"]["shapes"]["qwen2-0.5b"]["per_prompt"]["32"]["share_of_bound"] == b["share_of_bound"]
    assert res["shapes"]["qwen2-0.5b"]["library_sha256"] == "cd" * 32
    from plot import gpu_shape_lines

    text = "\n".join(gpu_shape_lines(res))
    assert "| 32 | 300.0 | 100.0 | x3.00 | 2,000 | 1,000 | x2.00 | 100 / 400 |" in text
    assert "queue submits per token (project / official) 12 / 50, 12 / 50" in text
    assert f"| qwen2-0.5b | 32 | 2,000 | 300.0 | {bound:,.0f} | {100 * 300.0 / bound:.1f}% |" in text
    # the built-in model's collect afterwards keeps them
    node = {"32": {"prompt_tokens": 32, "completion_tokens": 64, "decode_tok_s": {"median": 50.0},
                   "prefill_tok_s": {"median": 900.0}, "cpu_s": {"median": 1.0}, "wall_s": {"median": 2.0}}}
    again = json.loads(gpu_device.collect(_raw_dir(tmp_path / "again", gbps, params, kv, node), out).read_text())
    assert again["official"] == res["official"] and again["summary"]["shapes"] == res["summary"]["shapes"]


def _raw_dir(d: Path, gbps, params, kv, prompts) -> Path:
    d.mkdir(parents=True)
    return _raw(d, gbps, params, kv, prompts)


def test_collect_shapes_puts_an_earlier_library_of_the_shape_beside_it_and_keeps_the_last_record(tmp_path):
    """A shape's job SHAPE-baseline (prepare --shape-baseline-lib: an earlier library, same weights, same call) is
    no shape of its own: it becomes the shape's before_same_call with new / before per prompt (a job SHAPE--NAME, another
    build, goes into its variants_same_call); the shape's record
    from an earlier call stays in short as ``previous``, and other shapes already in gpu.json stay."""
    raw = json.loads(_raw(tmp_path, 3000.0, 1, 1, {}).read_text())
    raw["jobs"], raw["when"] = {}, "2026-12-08T02:50:00Z"
    w = {"params_bytes": 700_000_000, "kv_bytes_per_position": 65536}
    spec = lambda sha: {"id": "l", "lib": "model.wasm", "files": [{"name": "model.wasm", "sha256": sha}]}  # noqa: E731
    raw["manifest"]["jobs"] = {"llama3.2-1b": {"job": {"spec": spec("aa" * 32), "max_tokens": 64}, "weights": w},
                               "llama3.2-1b-baseline": {"job": {"spec": spec("bb" * 32), "max_tokens": 64},
                                                        "weights": w, "shares": "llama3.2-1b"},
                               "llama3.2-1b--lanes64": {"job": {"spec": spec("cc" * 32), "max_tokens": 64}, "weights": w}}
    (tmp_path / "raw" / "gpu_raw.json").write_text(json.dumps(raw))
    out = tmp_path / "out"
    out.mkdir()
    (out / "gpu.json").write_text(json.dumps({"shapes": {
        "llama3.2-1b": {"when": "2026-12-07T23:43:17Z", "source_commit": "e88bb5b", "per_prompt": {"32": {"decode_tok_s": 323.5}}},
        "qwen2-0.5b": {"when": "2026-12-07T16:56:36Z"}}}))
    new = _shape_chrome(tmp_path, "llama3.2-1b", {"32": 400.0, "512": 380.0}, {"32": 700.0, "512": 2700.0}, 64 * 150, "ab")
    old = _shape_chrome(tmp_path, "llama3.2-1b-baseline", {"32": 320.0, "512": 304.0}, {"32": 700.0, "512": 2700.0},
                        64 * 160, "ab")
    var = _shape_chrome(tmp_path, "llama3.2-1b--lanes64", {"32": 500.0, "512": 190.0}, {"32": 700.0, "512": 2700.0},
                        64 * 150, "ab")
    assert gpu_device.job_of(var) == "llama3.2-1b--lanes64"
    res = json.loads(gpu_device.collect_shapes(tmp_path / "raw" / "gpu_raw.json",
                                               {"llama3.2-1b": new, "llama3.2-1b-baseline": old,
                                                "llama3.2-1b--lanes64": var}, out).read_text())
    assert set(res["shapes"]) == {"llama3.2-1b", "qwen2-0.5b"}
    s = res["shapes"]["llama3.2-1b"]
    b = s["before_same_call"]
    assert b["library_sha256"] == "bb" * 32 and s["library_sha256"] == "aa" * 32
    assert b["decode_tok_s"] == {"32": 320.0, "512": 304.0}
    assert b["decode_new_over_before"]["32"] == pytest.approx(1.25) and b["decode_new_over_before"]["512"] == pytest.approx(1.25)
    assert s["previous"]["decode_tok_s"] == {"32": 323.5} and s["previous"]["source_commit"] == "e88bb5b"
    assert "llama3.2-1b-baseline" not in res["summary"]["shapes"]
    # another build of the shape (prepare --shape-lib-variant llama3.2-1b:lanes64=FILE): beside it, not a shape
    v = s["variants_same_call"]["lanes64"]
    assert v["library_sha256"] == "cc" * 32 and v["decode_tok_s"] == {"32": 500.0, "512": 190.0}
    assert v["decode_variant_over_shape"]["32"] == pytest.approx(1.25) and v["decode_variant_over_shape"]["512"] == pytest.approx(0.5)
