"""Build a web-llm model folder from a GGUF file or a Hugging Face folder, once, cached by content hash.

A model folder holds what web-llm 0.2.85 loads: ``mlc-chat-config.json``, ``tokenizer.json``,
``tensor-cache.json`` + ``params_shard_N.bin`` and the model library ``model.wasm``, plus
``manifest.json`` (sha256 and size of every file, for the widget's content-addressed loader).

    from webllm_widget.compile.pipeline import build_model_folder
    folder = build_model_folder("SmolLM2-135M-Instruct.Q4_1.gguf")        # lossless ggml mode, WebGPU
    folder = build_model_folder("path/to/hf-folder", quantization="q4f32_1")

The folder's name carries a hash of (source file contents, quantization, device, compiler version):
a second call with the same inputs finds it and does no work. The folder is assembled in a temp dir
and moved into place only when complete, so a failure leaves nothing half-written.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from .. import cache
from .._version import __version__
from ..errors import BadModel, CompileError, WebLLMWidgetError
from .arch import registry
from .chat_config import chat_config, chat_template_of, conv_template_from_jinja, tool_use_template_of, write_chat_config
from .tool_calls import tool_format_or_reason
from .tensor_cache import verify_tensor_cache, write_tensor_cache
from .tokenizer import tokenizer_info, write_tokenizer
from .checkpoint import Checkpoint, open_checkpoint

__all__ = ["build_model_folder", "source_hash", "MANIFEST", "LIBRARY_NAME", "DEVICES"]

MANIFEST = "manifest.json"
LIBRARY_NAME = "model.wasm"
#: device -> model library target passed to ``model_lib.build_model_library``
DEVICES = {"webgpu": "webgpu", "cpu": "cpu"}
#: Bump when this module changes what it writes (part of every folder's content hash).
FOLDER_FORMAT = "1"


def _tqdm(progress: bool, **kw):
    from tqdm.auto import tqdm

    return tqdm(disable=not progress, **kw)


# ------------------------------------------------------------------------------------ content hashes

def _memo_path() -> Path:
    return cache.cache_dir() / "source-hashes.json"


def _file_sha256(path: Path, progress: bool = False) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so a second build does not re-read big files."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    memo_file = _memo_path()
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return memo[key]
    h = hashlib.sha256()
    with open(path, "rb") as f, _tqdm(progress and st.st_size > 64 << 20, total=st.st_size, unit="B",
                                      unit_scale=True, desc=f"hash {path.name}") as bar:
        while block := f.read(1 << 22):
            h.update(block)
            bar.update(len(block))
    memo[key] = h.hexdigest()
    cache.atomic_write_bytes(memo_file, json.dumps(memo).encode())
    return memo[key]


def source_hash(ckpt: Checkpoint, progress: bool = False) -> str:
    """Hash of everything the build reads from the source (the GGUF file, or the HF folder's files)."""
    p = Path(ckpt.path)
    if ckpt.kind == "gguf":
        return _file_sha256(p, progress)
    parts = []
    for f in sorted(p.iterdir()):
        if f.is_file() and (f.suffix in (".safetensors", ".json") or f.name == "tokenizer.model"):
            parts.append(f"{f.name}:{_file_sha256(f, progress)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


#: Modules whose code decides the folder's non-library files (the GPU library has its own content key).
_FOLDER_SOURCES = ("checkpoint", "arch", "quant", "params.py", "tensor_cache.py", "tokenizer.py", "chat_config.py",
                   "tool_calls.py", "pipeline.py")


def _compiler_version(cfg: Any, quant: Any, device: str, schedule: str, library: bool) -> dict:
    """What, besides the source checkpoint, decides the folder's bytes.

    Only the modules that shape this folder are hashed (not every file of the package), so editing an
    unrelated module does not rebuild models.
    """
    from .keys import cpu_library_key, model_library_key, tvm_version

    sources = cache.sources_digest(Path(__file__).parent,
                                   _FOLDER_SOURCES + (("cpu.py", "build.py") if device == "cpu" else ()))
    doc = {"webllm-widget": __version__, "folder": FOLDER_FORMAT, "tvm": tvm_version(), "sources": sources[:16]}
    if library and device == "webgpu":
        doc["library"] = model_library_key(cfg, quant, DEVICES[device], schedule)
    elif library:  # the CPU library's key holds the model compiler's sources
        doc["library"] = cpu_library_key(cfg, quant)
    return doc


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "model"


# ------------------------------------------------------------------------------------ the build

def _resolve_quantization(ckpt: Checkpoint, cfg: Any, quantization: Any, device: str = "webgpu"):
    from .quant.ggml import ggml_quantization
    from .quant.modes import Quantization, as_quantization

    if quantization is None:
        quantization = "ggml" if ckpt.kind == "gguf" else "q4f32_1"
    if isinstance(quantization, Quantization) and quantization.name != "ggml":
        return quantization
    name = quantization.name if isinstance(quantization, Quantization) else str(quantization)
    if name == "ggml":
        if ckpt.kind != "gguf":
            raise BadModel(f"{ckpt.path}: the lossless 'ggml' mode keeps a GGUF file's blocks and needs a GGUF "
                           "input; for a Hugging Face folder use q4f32_1, q4f16_1 or q0f32.")
        return ggml_quantization(ckpt, cfg, device=device)
    return as_quantization(name)


def _write_manifest(folder: Path, info: dict, known: dict | None = None) -> dict:
    """``known``: name -> {sha256, size} of files linked from a checked build (not hashed again)."""
    files = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name != MANIFEST and not p.name.startswith("."):
            k = (known or {}).get(p.name)
            if k is not None and p.name != LIBRARY_NAME and k["size"] == p.stat().st_size:
                files[p.name] = dict(k)
            else:
                files[p.name] = {"sha256": cache.sha256_file(p), "size": p.stat().st_size}
    doc = {**info, "files": files}
    (folder / MANIFEST).write_text(json.dumps(doc, indent=1))
    return doc


def _existing(folder: Path, key: str) -> bool:
    """Whether ``folder`` is a complete build with this key (every listed file present at its size)."""
    try:
        doc = json.loads((folder / MANIFEST).read_text())
        if doc.get("key") != key:
            return False
        return all((folder / n).stat().st_size == f["size"] for n, f in doc["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def build_model_folder(source: str | os.PathLike, *, quantization: Any = None, device: str = "webgpu",
                       out: str | os.PathLike | None = None, progress: bool = True,
                       library: bool = True, schedule: str = "auto", name: str | None = None,
                       relaxed_simd: bool = True) -> Path:
    """Build (or find) the web-llm model folder for ``source``; return its path.

    source: a ``.gguf`` file or a Hugging Face folder (``config.json`` + ``*.safetensors`` + ``tokenizer.json``).
    quantization: ``None`` picks ``ggml`` (lossless, keeps the file's blocks) for GGUF and ``q4f32_1`` for HF;
        or one of ``q0f32``, ``q4f32_1``, ``q4f16_1``, ``ggml``.
    device: ``"webgpu"`` or ``"cpu"`` (the model library's target).
    out: where to put the folder; default ``<cache>/models/<name>-<quant>-<hash>``.
    library: build and include ``model.wasm`` (``False``: weights, tokenizer and config only — for tests).
    schedule: GPU kernel schedules (``"auto"``/``"gpu"``: real GPUs; ``"fallback"``: software adapters).
    name: the model's name, first part of the folder name and model id; default the source's own name
        (GGUF ``general.name``, else the file or folder name).
    relaxed_simd: a CPU folder also carries the relaxed-SIMD build (``model-relaxed-simd.wasm``) beside the
        SIMD128 ``model.wasm``; ``False`` leaves it out (one TVM build less, for callers that run ``model.wasm``).

    Raises BadModel for unusable input, CompileError when the library build fails. Nothing is left
    at the destination unless the whole folder was written.
    """
    if device not in DEVICES:
        raise BadModel(f"device {device!r} is not supported; use one of {', '.join(DEVICES)}.")
    t_start = time.perf_counter()
    ckpt = open_checkpoint(source)
    cfg = registry.config_from_dict(ckpt.config)
    quant = _resolve_quantization(ckpt, cfg, quantization, device)
    src_hash = source_hash(ckpt, progress)
    if device == "cpu":
        from .keys import CPU_KERNELS_VERSION

        device_key = f"cpu-{CPU_KERNELS_VERSION}"  # the weights' layout changes with the CPU kernels
    else:
        device_key = device
    key_doc = {"source": src_hash, "quantization": quant.key(), "device": device_key, "schedule": schedule,
               "library": library, "compiler": _compiler_version(cfg, quant, device, schedule, library)}
    if device == "cpu" and not relaxed_simd:
        key_doc["relaxed_simd"] = False
    key = hashlib.sha256(json.dumps(key_doc, sort_keys=True).encode()).hexdigest()[:16]
    name = _slug(f"{name or ckpt.config.get('name') or Path(ckpt.path).stem}-{quant.name}-{device}")
    dest = Path(out) if out is not None else cache.cache_dir() / "models" / f"{name}-{key}"
    if _existing(dest, key):
        return dest
    # one build per folder at a time across processes; whoever waited finds the other's result
    with cache.build_lock(f"model-{dest.name}"):
        if _existing(dest, key):
            return dest
        if library:
            from .keys import cached_library, require_compiler

            if cached_library(cfg, quant, device, schedule) is None:  # before converting any weights
                require_compiler(f"building the model library of {Path(ckpt.path).name} ({quant.name}, {device})")
        if dest.exists() and any(dest.iterdir()) and not (dest / MANIFEST).exists():
            raise BadModel(f"{dest} exists and is not a model folder built by webllm-widget; pick another --out "
                           "or remove it.")

        # Another schedule of the same WebGPU model has the same weights, tokenizer and config (only the library's
        # kernels differ): link them from the default ("auto") build when it is there instead of converting again.
        twin = None
        if device == "webgpu" and library and schedule != "auto":
            twin_doc = {**key_doc, "schedule": "auto",
                        "compiler": _compiler_version(cfg, quant, device, "auto", library)}
            twin_key = hashlib.sha256(json.dumps(twin_doc, sort_keys=True).encode()).hexdigest()[:16]
            candidate = cache.cache_dir() / "models" / f"{name}-{twin_key}"
            twin = candidate if _existing(candidate, twin_key) else None

        steps = ["weights", "tokenizer", "config"] + (["library"] if library else []) + ["manifest"]
        with cache.atomic_dir(dest) as tmp, _tqdm(progress, total=len(steps), desc=f"build {name}",
                                                  unit="step") as bar:
            if twin is not None:
                bar.set_postfix_str(f"weights, tokenizer, config shared with {twin.name}")
                _link_shared(twin, tmp)
                doc = json.loads((tmp / "tensor-cache.json").read_text())
                bar.update(3)
            else:
                doc = _convert(ckpt, cfg, quant, device, tmp, progress, bar)

            # 4. the model library
            if library:
                bar.set_postfix_str("library")
                _build_library(cfg, quant, device, tmp / LIBRARY_NAME,
                               [r["name"] for s in doc["records"] for r in s["records"]], progress, schedule,
                               relaxed_simd)
                bar.update(1)

            # 5. manifest (sha256 of every file: the widget moves files content-addressed)
            bar.set_postfix_str("manifest")
            _write_manifest(tmp, {"key": key, "build": key_doc, "schedule": schedule, "source_path": str(ckpt.path),
                                  "model_id": name, "quantization": quant.name, "device": device,
                                  "library": LIBRARY_NAME if library else None,
                                  "build_seconds": round(time.perf_counter() - t_start, 1)},
                            known=_manifest_files(twin) if twin is not None else None)
            bar.update(1)
        return dest


def _manifest_files(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())["files"]


def _link_shared(twin: Path, tmp: Path) -> None:
    """Hard-link every file of ``twin`` but its library and manifest into ``tmp`` (a copy where links fail)."""
    for name in _manifest_files(twin):
        if name == LIBRARY_NAME:
            continue
        try:
            os.link(twin / name, tmp / name)
        except OSError:  # another file system, or links not allowed: the bytes are the same either way
            shutil.copyfile(twin / name, tmp / name)


def _convert(ckpt: Checkpoint, cfg: Any, quant: Any, device: str, tmp: Path, progress: bool, bar: Any) -> dict:
    """Steps 1-3 of a build: weights into shards, tokenizer, mlc-chat-config.json. Returns the tensor cache."""
    # 1. parameters, streamed tensor by tensor into shards
    from .params import param_records

    total = sum(ckpt.get(n).nbytes for n in ckpt.tensor_names())
    bar.set_postfix_str("weights")
    with _tqdm(progress, total=total, unit="B", unit_scale=True, desc="weights", leave=False) as wbar:
        # source bytes consumed, approximately: count each record's size against the source size
        records = param_records(ckpt, cfg, quant)
        if device == "cpu":  # the CPU kernels read 4-/8-bit words interleaved for SIMD128 (compile/cpu.py)
            from .cpu import cpu_param_records

            records = cpu_param_records(records)
        doc = write_tensor_cache(tmp, records,
                                 progress=lambda n: wbar.update(min(n, max(0, total - wbar.n))))
    verify_tensor_cache(tmp)
    bar.update(1)

    # 2. tokenizer
    bar.set_postfix_str("tokenizer")
    tokenizer_files = write_tokenizer(ckpt, tmp)
    tok_doc = json.loads((tmp / "tokenizer.json").read_text())
    specials = {t["content"]: int(t["id"]) for t in tok_doc.get("added_tokens", [])}
    bar.update(1)

    # 3. mlc-chat-config.json
    bar.set_postfix_str("config")
    template = chat_template_of(ckpt)
    conv = conv_template_from_jinja(template, specials)
    c = ckpt.config
    chat = chat_config(
        model_type=getattr(cfg, "model_type", c["architecture"]), quantization=quant.name,
        vocab_size=c["vocab_size"], context_window_size=cfg.context_window_size,
        prefill_chunk_size=cfg.prefill_chunk_size, conv_template=conv, tokenizer_files=tokenizer_files,
        bos_token_id=c.get("bos_token_id"), tokenizer_info=tokenizer_info(tok_doc),
        model_config={k: c[k] for k in registry.family_of(cfg).config_module.CHAT_CONFIG_KEYS if k in c})
    # the template calls tools (Qwen2.5 / Qwen3 style): how its turns carry them; a template that calls tools in a
    # way the turns cannot carry is named, so a request with tools says why it is refused
    tools, refused = tool_format_or_reason(tool_use_template_of(ckpt) or template, conv)
    if tools is not None:
        chat["tool_calls"] = tools
    elif refused is not None:
        chat["tool_calls_refused"] = refused
    write_chat_config(tmp, chat)
    bar.update(1)
    return doc


def _build_library(cfg, quant, device: str, dest: Path, param_names: list[str], progress: bool,
                   schedule: str, relaxed_simd: bool = True) -> None:
    from .keys import cached_library, compiler_available

    cached = cached_library(cfg, quant, device, schedule)
    if cached is not None and not compiler_available():  # from the wheel's packaged libraries: no TVM here
        shutil.copyfile(cached, dest)
        relaxed = cached_library(cfg, quant, device, isa="relaxed-simd") if device == "cpu" else None
        if relaxed is not None and relaxed_simd:  # the CPU's relaxed-SIMD build, when the wheel carries it too
            from .cpu import LIBRARY_FILES

            shutil.copyfile(relaxed, dest.with_name(LIBRARY_FILES["relaxed-simd"]))
        return
    try:
        from .model_lib import build_model_library
    except ImportError as e:
        raise CompileError(f"the model library builder is not available ({e}). Reinstall webllm-widget "
                           "with its apache-tvm dependency.") from e
    try:
        if device == "cpu":  # wasm32 SIMD128 kernels and layout (compile/cpu.py), plus the relaxed-SIMD build beside it
            from .cpu import ISAS, LIBRARY_FILES, build_cpu_library

            for isa in ISAS:
                if LIBRARY_FILES[isa] != dest.name and (relaxed_simd or isa != "relaxed-simd"):
                    shutil.copyfile(build_cpu_library(cfg, quant, isa=isa, progress=progress),
                                    dest.with_name(LIBRARY_FILES[isa]))
            lib = build_cpu_library(cfg, quant, progress=progress)
        else:
            lib = build_model_library(cfg, quant, DEVICES[device], schedule=schedule, progress=progress)
    except WebLLMWidgetError:
        raise
    except Exception as e:  # a TVM/emcc failure: say which step, keep the cause chained for the details
        raise CompileError(f"building the model library ({getattr(cfg, 'model_type', 'llama')}, {quant.name}, "
                           f"{device}) failed: {type(e).__name__}: {str(e)[:500]}. Run `webllm-widget doctor` "
                           "to check the toolchain; if it is fine this is a bug in webllm-widget.") from e
    if hasattr(lib, "save"):
        lib.save(dest)
    elif isinstance(lib, (bytes, bytearray, memoryview)):
        dest.write_bytes(bytes(lib))
    else:  # a path to the linked file
        shutil.copyfile(lib, dest)
    if dest.read_bytes()[:4] != b"\0asm":
        raise CompileError(f"the model library written to {dest.name} is not a wasm module; this is a bug.")
    meta = getattr(lib, "metadata", None)
    declared = meta.get("params") if isinstance(meta, dict) else getattr(lib, "params", None)
    if declared is not None:
        names = [p["name"] if isinstance(p, dict) else str(p) for p in declared]
        if names != param_names:
            missing = sorted(set(names) - set(param_names))[:3]
            extra = sorted(set(param_names) - set(names))[:3]
            raise CompileError("the model library's _metadata params do not match the written weights "
                               f"(library-only: {missing}, weights-only: {extra}); this is a bug in webllm-widget.")
