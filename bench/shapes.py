"""GGUF files of real model shapes with random weights, for speed benchmarks (bench/cpu.py): no model hub needed.

    path = qwen05b_shaped_gguf()     # Qwen2.5-0.5B's shapes as a Llama GGUF: Q4_0 matrices, Q8_0 embedding

Qwen2.5-0.5B: 24 layers, hidden 896, 14 query / 2 key-value heads of 64, FFN 4864, vocabulary 151,936, tied
embedding. Written as ``llama`` (the architecture the compiler has), so the q/k/v biases of Qwen2 are left out; they
are 1,152 additions per layer beside ~15 M multiply-adds, nothing a speed comparison sees. The tokenizer is the
built-in SmolLM2 GGUF's (llama.cpp accepts its pre-tokenizer) padded with unused tokens to the real vocabulary, so
both llama.cpp and the compiler read the file. Weights: PyPI ``gguf``'s own quantizer on N(0, 0.02) values (norms
1), seeded, so the file is the same on every machine; cached under ``cache_dir()/bench/``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

QWEN05B = {"name": "Qwen2.5-0.5B-shape", "layers": 24, "hidden": 896, "heads": 14, "kv_heads": 2, "head_dim": 64,
           "ffn": 4864, "vocab": 151936, "rope_theta": 1000000.0, "eps": 1e-6, "context": 32768}
VERSION = "1"


def qwen05b_shaped_gguf(out: Path | None = None, matrix_type: str = "Q4_0") -> Path:
    """Write (once) and return a random-weight GGUF of Qwen2.5-0.5B's shapes (see the module docstring)."""
    import gguf

    from webllm_widget import models
    from webllm_widget.cache import atomic_write_bytes, cache_dir

    s = QWEN05B
    path = Path(out) if out else cache_dir() / "bench" / f"qwen2.5-0.5b-shape-{matrix_type.lower()}-v{VERSION}.gguf"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    src = gguf.GGUFReader(str(models.default_gguf(progress=False)))
    tmp = path.with_suffix(".writing")
    wr = gguf.GGUFWriter(str(tmp), "llama")
    wr.add_name(s["name"])
    wr.add_block_count(s["layers"])
    wr.add_context_length(s["context"])
    wr.add_embedding_length(s["hidden"])
    wr.add_feed_forward_length(s["ffn"])
    wr.add_head_count(s["heads"])
    wr.add_head_count_kv(s["kv_heads"])
    wr.add_rope_freq_base(s["rope_theta"])
    wr.add_layer_norm_rms_eps(s["eps"])
    wr.add_vocab_size(s["vocab"])
    wr.add_rope_dimension_count(s["head_dim"])

    def field(name):
        return src.fields[name]

    tokens = [bytes(field("tokenizer.ggml.tokens").parts[i]).decode("utf-8")
              for i in field("tokenizer.ggml.tokens").data]
    types = [int(field("tokenizer.ggml.token_type").parts[i][0]) for i in field("tokenizer.ggml.token_type").data]
    merges = [bytes(field("tokenizer.ggml.merges").parts[i]).decode("utf-8")
              for i in field("tokenizer.ggml.merges").data]
    pad = s["vocab"] - len(tokens)
    wr.add_tokenizer_model("gpt2")
    wr.add_tokenizer_pre(bytes(field("tokenizer.ggml.pre").parts[-1]).decode("utf-8"))
    wr.add_token_list(tokens + [f"<unused_{i}>" for i in range(pad)])
    wr.add_token_types(types + [int(gguf.TokenType.UNUSED)] * pad)
    wr.add_token_merges(merges)
    for key, add in (("tokenizer.ggml.bos_token_id", wr.add_bos_token_id),
                     ("tokenizer.ggml.eos_token_id", wr.add_eos_token_id)):
        if key in src.fields:
            add(int(field(key).parts[-1][0]))
    if "tokenizer.chat_template" in src.fields:
        wr.add_chat_template(bytes(field("tokenizer.chat_template").parts[-1]).decode("utf-8"))

    rng = np.random.default_rng(0)
    qtype = getattr(gguf.GGMLQuantizationType, matrix_type)

    def matrix(name: str, rows: int, cols: int, kind=qtype) -> None:
        w = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float32)
        wr.add_tensor(name, gguf.quants.quantize(w, kind), raw_dtype=kind)

    h, hd = s["hidden"], s["head_dim"]
    matrix("token_embd.weight", s["vocab"], h, gguf.GGMLQuantizationType.Q8_0)
    for i in range(s["layers"]):
        p = f"blk.{i}."
        wr.add_tensor(p + "attn_norm.weight", np.ones(h, np.float32))
        matrix(p + "attn_q.weight", s["heads"] * hd, h)
        matrix(p + "attn_k.weight", s["kv_heads"] * hd, h)
        matrix(p + "attn_v.weight", s["kv_heads"] * hd, h)
        matrix(p + "attn_output.weight", h, s["heads"] * hd)
        wr.add_tensor(p + "ffn_norm.weight", np.ones(h, np.float32))
        matrix(p + "ffn_gate.weight", s["ffn"], h)
        matrix(p + "ffn_up.weight", s["ffn"], h)
        matrix(p + "ffn_down.weight", h, s["ffn"])
    wr.add_tensor("output_norm.weight", np.ones(h, np.float32))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    atomic_write_bytes(path, tmp.read_bytes())
    tmp.unlink()
    return path


if __name__ == "__main__":
    print(qwen05b_shaped_gguf())
