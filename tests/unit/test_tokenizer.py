"""tokenizer.json rebuilt from GGUF metadata, checked with Hugging Face's own ``tokenizers`` library."""
from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer

from tiny import CHATML, TinyLlama, copy_gguf_with, tiny_tokenizer_json
from webllm_widget.compile.chat_config import chat_template_of, conv_template_from_jinja, render_prompt
from webllm_widget.compile.tokenizer import special_token_ids, tokenizer_json_from_gguf, write_tokenizer
from webllm_widget.compile.checkpoint import open_checkpoint
from webllm_widget.errors import BadModel

TEXTS = [
    "Hello, world!",
    "héllo wörld — naïve café, 日本語のテキスト, Ελληνικά, emoji 🙂👍🏽",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n\n\tindented\r\n",
    "   leading and trailing spaces   ",
    "line1\n\n\n\nline5",
    "1234567890 3.14159 -42 1e-5",
    "",
]


@pytest.fixture(scope="module")
def smollm2():
    from webllm_widget.models import default_gguf

    ckpt = open_checkpoint(default_gguf(progress=False))
    doc = tokenizer_json_from_gguf(ckpt)
    return ckpt, doc, Tokenizer.from_str(json.dumps(doc))


@pytest.mark.parametrize("text", TEXTS)
def test_smollm2_round_trips_unicode_code_and_whitespace(smollm2, text):
    _, _, tok = smollm2
    ids = tok.encode(text).ids
    assert tok.decode(ids, skip_special_tokens=False) == text
    if text:
        assert len(ids) < len(text.encode()) + 1  # merges apply: never more tokens than bytes


def test_smollm2_special_tokens_map_to_their_ids(smollm2):
    _, doc, tok = smollm2
    specials = special_token_ids(doc)
    assert specials["<|endoftext|>"] == 0 and specials["<|im_start|>"] == 1 and specials["<|im_end|>"] == 2
    assert len(specials) == 17 and sorted(specials.values()) == list(range(17))
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>\n<|endoftext|>").ids
    assert ids[0] == 1 and 2 in ids and ids[-1] == 0
    assert tok.token_to_id("<|im_end|>") == 2


def test_smollm2_vocab_and_merges_come_from_the_file(smollm2):
    ckpt, doc, tok = smollm2
    assert tok.get_vocab_size() == ckpt.config["vocab_size"] == 49152
    assert len(doc["model"]["merges"]) == 48900
    assert all(isinstance(m, str) and m.count(" ") == 1 for m in doc["model"]["merges"][:1000])


def test_smollm2_splits_digits_one_by_one_and_adds_no_bos(smollm2):
    _, _, tok = smollm2
    enc = tok.encode("12345")
    assert enc.tokens == ["1", "2", "3", "4", "5"]
    assert tok.encode("Hello").ids[0] != 1  # no <|im_start|>/BOS prepended
    assert len(tok.encode("Hello world").ids) == 2


def test_chatml_prompt_matches_the_models_jinja_template(smollm2):
    import jinja2

    ckpt, doc, tok = smollm2
    template = chat_template_of(ckpt)
    conv = conv_template_from_jinja(template, special_token_ids(doc))
    assert conv["system_message"] == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert conv["stop_token_ids"] == [2, 0]
    turns = [("user", "What is the capital of France?"), ("assistant", "Paris."), ("user", "And Italy?")]
    ours = render_prompt(conv, turns + [("assistant", None)])
    jinja = jinja2.Environment().from_string(template).render(
        messages=[{"role": r, "content": c} for r, c in turns], add_generation_prompt=True)
    assert ours == jinja
    assert tok.encode(ours).ids == tok.encode(jinja).ids


def test_tiny_gguf_tokenizer_matches_the_reference_tokenizer_json(tmp_path):
    ckpt = open_checkpoint(TinyLlama.make().write_gguf(tmp_path / "t.gguf"))
    rebuilt = Tokenizer.from_str(json.dumps(tokenizer_json_from_gguf(ckpt)))
    reference = Tokenizer.from_str(json.dumps(tiny_tokenizer_json()))
    for text in TEXTS + ["the capital of France is Paris", "<|im_start|>user\nhello world<|im_end|>"]:
        assert rebuilt.encode(text).ids == reference.encode(text).ids, text
        assert rebuilt.decode(rebuilt.encode(text).ids, skip_special_tokens=False) == text


def test_hf_folder_tokenizer_is_copied(tmp_path):
    ckpt = open_checkpoint(TinyLlama.make().write_hf(tmp_path / "hf"))
    files = write_tokenizer(ckpt, tmp_path / "out")
    assert files == ["tokenizer.json"]
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == (tmp_path / "hf" / "tokenizer.json").read_bytes()


def test_conv_template_of_the_tiny_model_uses_its_own_system_prompt():
    conv = conv_template_from_jinja(CHATML, {"<|im_end|>": 2, "<|endoftext|>": 0})
    assert conv["system_message"] == "You are a tiny test model"


def test_sentencepiece_gguf_is_refused_with_advice(tmp_path):
    src = TinyLlama.make().write_gguf(tmp_path / "t.gguf")
    ckpt = open_checkpoint(copy_gguf_with(src, tmp_path / "spm.gguf", {"tokenizer.ggml.model": "llama"}))
    with pytest.raises(BadModel, match="tokenizer model 'llama'.*Hugging Face folder"):
        tokenizer_json_from_gguf(ckpt)
