"""Rebuild a Hugging Face ``tokenizer.json`` from a GGUF file's ``tokenizer.ggml.*`` metadata.

web-llm reads ``tokenizer.json`` through ``@mlc-ai/web-tokenizers`` (an older build of HF ``tokenizers``),
so merges are written as ``"a b"`` strings, the form every version accepts.

Supported: byte-level BPE (``tokenizer.ggml.model == "gpt2"``) with the pre-tokenizers ``smollm``
(each digit alone, then the GPT-2 regex), ``gpt2``/``default``, ``llama-bpe`` (Llama 3) and ``qwen2``.
SentencePiece GGUFs (``"llama"`` model: TinyLlama, Llama 2) are not rebuilt: use the HF folder instead.

    doc = tokenizer_json_from_gguf(ckpt)       # ckpt: compile.checkpoint.GGUFCheckpoint
    write_tokenizer(ckpt, out_dir)             # -> out_dir/tokenizer.json (GGUF) or copies it (HF folder)
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import BadModel

__all__ = ["tokenizer_json_from_gguf", "write_tokenizer", "special_token_ids"]

# GGUF token types (llama.cpp's llama_token_type)
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

# Split patterns are facts of each model family's tokenizer (data, not code).
_GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _byte_level(use_regex: bool) -> dict:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def _split(pattern: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}


def _pre_tokenizer(pre: str, where: Path) -> dict:
    if pre == "smollm":
        return {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, _byte_level(True)]}
    if pre in ("gpt2", "default", "gpt-2"):
        return _byte_level(True)
    if pre in ("llama-bpe", "llama3", "smaug-bpe"):
        return {"type": "Sequence", "pretokenizers": [_split(_LLAMA3_RE), _byte_level(False)]}
    if pre == "qwen2":
        return {"type": "Sequence", "pretokenizers": [_split(_QWEN2_RE), _byte_level(False)]}
    raise BadModel(f"{where}: GGUF pre-tokenizer '{pre}' is not supported (supported: smollm, gpt2, llama-bpe, "
                   "qwen2). Use the model's Hugging Face folder, which carries its own tokenizer.json.")


def tokenizer_json_from_gguf(ckpt) -> dict:
    """The ``tokenizer.json`` document (a dict) for a GGUF checkpoint."""
    where = ckpt.path
    model = ckpt.metadata("tokenizer.ggml.model")
    if model != "gpt2":
        raise BadModel(f"{where}: tokenizer model '{model}' is not rebuilt from GGUF (only byte-level BPE, "
                       "'gpt2'). Use the model's Hugging Face folder, which carries its own tokenizer.json.")
    tokens = ckpt.metadata("tokenizer.ggml.tokens")
    types = ckpt.metadata("tokenizer.ggml.token_type")
    merges = ckpt.metadata("tokenizer.ggml.merges")
    if not tokens or merges is None:
        raise BadModel(f"{where}: GGUF has no tokenizer.ggml.tokens/merges. Use a GGUF with an embedded tokenizer "
                       "or the Hugging Face folder.")
    if types is None:
        types = [_NORMAL] * len(tokens)
    pre = ckpt.metadata("tokenizer.ggml.pre") or "default"
    vocab = {tok: i for i, tok in enumerate(tokens)}
    added = []
    for i, (tok, ty) in enumerate(zip(tokens, types)):
        if ty in (_CONTROL, _USER_DEFINED):
            added.append({"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": ty == _CONTROL})
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": _pre_tokenizer(str(pre), where),
        # No BOS is added (SmolLM2's own tokenizer does not; the chat template supplies the markers).
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "vocab": vocab, "merges": list(merges),
        },
    }


def _components(node: Any) -> list[dict]:
    """Every component of a tokenizer.json normalizer/pre-tokenizer/decoder, ``Sequence`` flattened."""
    if not isinstance(node, dict):
        return []
    out = [node]
    for key in ("normalizers", "pretokenizers", "decoders"):
        for child in node.get(key) or []:
            out += _components(child)
    return out


def tokenizer_info(doc: dict) -> dict[str, Any]:
    """web-llm's ``tokenizer_info`` (what its grammar engine needs to read the vocabulary) from ``tokenizer.json``.

    ``token_postproc_method``: ``byte_level`` when tokens spell bytes with GPT-2's printable stand-ins (a
    ``ByteLevel`` decoder or pre-tokenizer: SmolLM2, Llama 3, Qwen), ``byte_fallback`` when they are SentencePiece
    pieces with ``<0xNN>`` tokens for raw bytes (a ``ByteFallback`` decoder or ``byte_fallback`` model: Llama 2,
    TinyLlama, Gemma, Phi-3), else ``raw``. ``prepend_space_in_encode``: the encoder puts a ``▁`` before the text
    (a ``Prepend`` normalizer, or a ``Metaspace`` pre-tokenizer that adds a prefix space);
    ``strip_space_in_decode``: the decoder strips that space again (a ``Strip`` decoder of one leading space).
    """
    decoders = _components(doc.get("decoder"))
    pre = _components(doc.get("pre_tokenizer"))
    norm = _components(doc.get("normalizer"))
    kinds = {c.get("type") for c in decoders + pre}
    model = doc.get("model") or {}
    if "ByteLevel" in kinds:
        method = "byte_level"
    elif "ByteFallback" in kinds or model.get("byte_fallback"):
        method = "byte_fallback"
    else:
        method = "raw"
    prepend = any(c.get("type") == "Prepend" and c.get("prepend") == "\u2581" for c in norm) or any(
        c.get("type") == "Metaspace" and (c.get("prepend_scheme") in ("first", "always")
                                          or (c.get("prepend_scheme") is None and c.get("add_prefix_space")))
        for c in pre)
    strip = any(c.get("type") == "Strip" and c.get("content") == " " and int(c.get("start", 0)) >= 1
                for c in decoders)
    return {"token_postproc_method": method, "prepend_space_in_encode": bool(prepend),
            "strip_space_in_decode": bool(strip)}


def special_token_ids(doc: dict) -> dict[str, int]:
    """``{content: id}`` of the special (control) tokens of a ``tokenizer.json`` document."""
    return {t["content"]: int(t["id"]) for t in doc.get("added_tokens", []) if t.get("special")}


def write_tokenizer(ckpt, folder: str | os.PathLike) -> list[str]:
    """Write the tokenizer files web-llm needs into ``folder``; return their names (``tokenizer_files``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if ckpt.kind == "gguf":
        doc = tokenizer_json_from_gguf(ckpt)
        (folder / "tokenizer.json").write_text(json.dumps(doc, ensure_ascii=False))
        return ["tokenizer.json"]
    src = Path(ckpt.path) / "tokenizer.json"
    if not src.exists():
        raise BadModel(f"{ckpt.path}: no tokenizer.json. Download the model's tokenizer.json into that folder "
                       "(web-llm reads tokenizer.json).")
    shutil.copyfile(src, folder / "tokenizer.json")
    files = ["tokenizer.json"]
    for extra in ("tokenizer_config.json",):
        if (Path(ckpt.path) / extra).exists():
            shutil.copyfile(Path(ckpt.path) / extra, folder / extra)
            files.append(extra)
    return files
