"""Our tokenizer.json read by @mlc-ai/web-tokenizers 0.1.6, the tokenizer web-llm 0.2.85 bundles.

Runs the package's wasm build under Node (same code the page runs) and compares its ids with
Hugging Face ``tokenizers`` on the same file: an older tokenizers build rejecting or reading the
file differently would show up here, long before a browser test.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tokenizers import Tokenizer

from tiny import TinyLlama
from webllm_widget.compile.tokenizer import tokenizer_json_from_gguf
from webllm_widget.compile.checkpoint import open_checkpoint

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "js" / "node_modules"
SCRIPT = ROOT / "tests" / "helpers" / "js" / "web_tokenizers_encode.mjs"

TEXTS = [
    "Hello, world!",
    "héllo wörld — naïve café, 日本語のテキスト, emoji 🙂👍🏽",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n\n\tindented\r\n",
    "   leading and trailing spaces   ",
    "1234567890 3.14159 -42",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
]


def _web_encode(tokenizer_json: Path, texts: list[str], tmp_path: Path) -> list[dict]:
    node = shutil.which("node")
    assert node, "node is needed (it runs web-llm's tokenizer build)"
    assert (MODULES / "@mlc-ai/web-tokenizers").exists(), "run `npm ci` in js/ (devDependency @mlc-ai/web-tokenizers)"
    tp = tmp_path / "texts.json"
    tp.write_text(json.dumps(texts))
    r = subprocess.run([node, str(SCRIPT), str(MODULES), str(tokenizer_json), str(tp)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def _check(doc: dict, tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(doc, ensure_ascii=False))
    hf = Tokenizer.from_file(str(path))
    for text, web in zip(TEXTS, _web_encode(path, TEXTS, tmp_path)):
        assert web["ids"] == hf.encode(text).ids, text
        assert web["text"] == text


def test_web_tokenizers_reads_the_smollm2_tokenizer_like_hf_tokenizers(tmp_path):
    from webllm_widget.models import default_gguf

    _check(tokenizer_json_from_gguf(open_checkpoint(default_gguf(progress=False))), tmp_path)


def test_web_tokenizers_reads_the_tiny_model_tokenizer_like_hf_tokenizers(tmp_path):
    ckpt = open_checkpoint(TinyLlama.make().write_gguf(tmp_path / "t.gguf"))
    _check(tokenizer_json_from_gguf(ckpt), tmp_path)


def test_special_tokens_keep_their_ids_in_web_tokenizers(tmp_path):
    from webllm_widget.models import default_gguf

    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(tokenizer_json_from_gguf(open_checkpoint(default_gguf(progress=False)))))
    out = _web_encode(path, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], tmp_path)
    assert [o["ids"] for o in out] == [[0], [1], [2]]
