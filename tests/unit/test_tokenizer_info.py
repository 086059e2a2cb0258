"""``tokenizer_info`` in ``mlc-chat-config.json`` is derived from the tokenizer, and agrees with what HF
``tokenizers`` does with the same ``tokenizer.json``.

web-llm hands ``token_postproc_method`` and ``prepend_space_in_encode`` to its grammar engine, which reads every
vocabulary entry through them: a SentencePiece vocabulary read as byte-level (the old constant) spells its
``▁``-words and ``<0xNN>`` byte tokens wrong, and JSON-constrained output breaks on it.
"""
from __future__ import annotations

import json

import pytest

from tiny import tiny_tokenizer_json
from webllm_widget.compile.tokenizer import tokenizer_info

tokenizers = pytest.importorskip("tokenizers")

_PIECES = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["▁", "▁a", "▁b", "a", "b", "ab", "▁ab"]


def sentencepiece_json(style: str) -> dict:
    """A Llama 2-style SentencePiece BPE tokenizer.json: byte fallback; the space marker added by a ``Prepend``
    normalizer and stripped by the decoder (``legacy``), or by a ``Metaspace`` pre-tokenizer (newer files)."""
    vocab = {p: i for i, p in enumerate(_PIECES)}
    merges = ["▁ a", "▁ b", "a b", "▁a b"]
    doc = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, t in enumerate(_PIECES[:3])],
        "post_processor": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "vocab": vocab,
                  "merges": merges},
    }
    if style == "legacy":
        doc["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                                 {"type": "Replace", "pattern": {"String": " "},
                                                                  "content": "▁"}]}
        doc["pre_tokenizer"] = None
        doc["decoder"] = {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    else:
        doc["normalizer"] = None
        doc["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
        doc["decoder"] = {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Metaspace",
                          "replacement": "▁", "prepend_scheme": "first", "split": False}]}
    return doc


def _hf_behaviour(doc: dict) -> dict:
    tok = tokenizers.Tokenizer.from_str(json.dumps(doc))
    enc = tok.encode("ab", add_special_tokens=False).tokens
    return {"prepends": enc[0].startswith("▁"), "byte_tokens": any(t.startswith("<0x") for t in tok.encode(
        "é", add_special_tokens=False).tokens)}


@pytest.mark.parametrize("style", ["legacy", "metaspace"])
def test_sentencepiece_tokenizers_are_byte_fallback_with_a_prefix_space(style):
    doc = sentencepiece_json(style)
    info = tokenizer_info(doc)
    hf = _hf_behaviour(doc)
    assert hf == {"prepends": True, "byte_tokens": True}, "the test tokenizer must behave like SentencePiece"
    assert info["token_postproc_method"] == "byte_fallback"
    assert info["prepend_space_in_encode"] is hf["prepends"]
    assert info["strip_space_in_decode"] is (style == "legacy")


def test_byte_level_bpe_has_no_prefix_space():
    doc = tiny_tokenizer_json()
    hf = _hf_behaviour(doc)
    assert not hf["prepends"] and not hf["byte_tokens"]
    assert tokenizer_info(doc) == {"token_postproc_method": "byte_level", "prepend_space_in_encode": False,
                                   "strip_space_in_decode": False}


def test_a_built_folder_carries_the_tokenizers_info(tmp_path):
    from tiny import TinyLlama
    from webllm_widget.compile.pipeline import build_model_folder

    hf = TinyLlama.make(seed=0).write_hf(tmp_path / "hf")
    (hf / "tokenizer.json").write_text(json.dumps(sentencepiece_json("legacy")))
    folder = build_model_folder(hf, quantization="q0f32", library=False, progress=False, out=tmp_path / "out")
    chat = json.loads((folder / "mlc-chat-config.json").read_text())
    assert chat["tokenizer_info"] == {"token_postproc_method": "byte_fallback", "prepend_space_in_encode": True,
                                      "strip_space_in_decode": True}
